#include "pool/records.h"

#include <array>
#include <cstring>

#include "common/endian.h"

namespace tern::pool {
namespace {

// Record layouts, little-endian, after the type byte (docs/design/pool-format.md):
//   create object: uuid(16) name_len(1) name size(8) thin(1) created_ns(8) flags(1: 1 snapshot, 2 discarded)
//                  parent(16) source(16) map_len(4) map(4 each) prop_count(2), then per property
//                  key_len(1) key value_len(2) value
//   destroy: uuid(16)
//   map cluster: uuid(16) vc(4) pc(4);  unmap cluster: uuid(16) vc(4)
//   snapshot: replica(16) snapshot(16) created_ns(8) name_len(1) name
//   clone: snapshot(16) clone(16) created_ns(8) name_len(1) name
//   resize: uuid(16) size(8) count(4) new clusters(4 each)
//   set property: uuid(16) key_len(1) key value_len(2) value (empty value: remove)
constexpr uint8_t kFlagSnapshot = 1, kFlagDiscarded = 2;

class Writer {
 public:
  void u8(uint8_t v) { b_.push_back(v); }
  void u16(uint16_t v) { put(v); }
  void u32(uint32_t v) { put(v); }
  void u64(uint64_t v) { put(v); }
  void uuid(const Uuid& u) { bytes(u.bytes().data(), 16); }
  void bytes(const void* p, size_t n) {
    auto* c = static_cast<const uint8_t*>(p);
    b_.insert(b_.end(), c, c + n);
  }
  // A string after its length in `LenT` (callers keep strings within it: names 255, keys 64, values 1024).
  template <typename LenT>
  void str(const std::string& s) {
    put(LenT(s.size()));
    bytes(s.data(), s.size());
  }
  std::vector<uint8_t> take() { return std::move(b_); }

 private:
  template <typename T>
  void put(T v) {
    b_.resize(b_.size() + sizeof(T));
    store_le<T>(b_.data() + b_.size() - sizeof(T), v);
  }
  std::vector<uint8_t> b_;
};

// Reads one record's fields in order. The first field that does not fit stops it: later reads do
// nothing, and status() says which field, at which byte, of which kind of record.
class Decoder {
 public:
  Decoder(std::span<const uint8_t> b, uint8_t type, std::string_view kind) : b_(b), type_(type), kind_(kind) {}

  void u8(uint8_t& v, std::string_view what) { take(&v, 1, what); }
  void u16(uint16_t& v, std::string_view what) { le(v, what); }
  void u32(uint32_t& v, std::string_view what) { le(v, what); }
  void u64(uint64_t& v, std::string_view what) { le(v, what); }
  void uuid(Uuid& u, std::string_view what) {
    std::array<uint8_t, 16> raw;
    if (take(raw.data(), 16, what)) u = Uuid(raw);
  }
  // A string after its length in `LenT`.
  template <typename LenT>
  void str(std::string& s, std::string_view what) {
    LenT n = 0;
    le(n, what, " length");
    if (!ok() || !fits(n, what)) return;
    s.resize(n);
    take(s.data(), n, what);
  }
  // `n` little-endian u32s; refused before anything is allocated when the record cannot hold them.
  void u32s(std::vector<uint32_t>& out, uint32_t n, std::string_view what) {
    if (!ok() || !fits(uint64_t(n) * 4, what)) return;
    out.resize(n);
    for (uint32_t& v : out) {
      v = load_le<uint32_t>(b_.data() + at_);
      at_ += 4;
    }
  }

  size_t offset() const { return at_; }
  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  // The error so far, else one for bytes left after the last field.
  Status finish() const {
    if (!ok()) return status_;
    if (at_ != b_.size()) {
      return Status::Errorf(Errc::kCorruption, "{} record (type {}) has {} trailing byte(s) at byte {}", kind_, type_,
                            b_.size() - at_, at_);
    }
    return Status::Ok();
  }
  // A field that was read but is not acceptable (its offset: where it starts).
  Status invalid(size_t at, std::string_view what) const {
    return Status::Errorf(Errc::kCorruption, "{} record (type {}): {} at byte {}", kind_, type_, what, at);
  }

 private:
  // `what` + `suffix` names the field in the error ("name" + " length").
  bool fits(uint64_t n, std::string_view what, std::string_view suffix = {}) {
    if (n <= b_.size() - at_) return true;
    status_ = Status::Errorf(Errc::kCorruption,
                             "{} record (type {}) is truncated: its {}{} at byte {} needs {} byte(s), the record has {}",
                             kind_, type_, what, suffix, at_, n, b_.size());
    return false;
  }
  bool take(void* p, size_t n, std::string_view what, std::string_view suffix = {}) {
    if (!ok() || !fits(n, what, suffix)) return false;
    std::memcpy(p, b_.data() + at_, n);
    at_ += n;
    return true;
  }
  template <typename T>
  void le(T& v, std::string_view what, std::string_view suffix = {}) {
    uint8_t raw[sizeof(T)];
    if (take(raw, sizeof(T), what, suffix)) v = load_le<T>(raw);
  }

  std::span<const uint8_t> b_;
  size_t at_ = 1;  // after the type byte
  uint8_t type_;
  std::string_view kind_;
  Status status_;
};

// Encoders, one per kind (the type byte is written by the caller).

void encode_object(Writer& w, const ReplicaMeta& r) {
  w.uuid(r.uuid);
  w.str<uint8_t>(r.name);
  w.u64(r.size);
  w.u8(r.thin ? 1 : 0);
  w.u64(r.created_ns);
  w.u8(uint8_t((r.snapshot ? kFlagSnapshot : 0) | (r.discarded ? kFlagDiscarded : 0)));
  w.uuid(r.parent);
  w.uuid(r.source);
  w.u32(uint32_t(r.map.size()));
  for (uint32_t m : r.map) w.u32(m);
  w.u16(uint16_t(r.props.size()));
  for (auto& [k, v] : r.props) {
    w.str<uint8_t>(k);
    w.str<uint16_t>(v);
  }
}

void encode(Writer& w, const records::CreateObject& r) { encode_object(w, r.object); }
void encode(Writer& w, const records::Destroy& r) { w.uuid(r.uuid); }
void encode(Writer& w, const records::MapCluster& r) {
  w.uuid(r.uuid);
  w.u32(r.vc);
  w.u32(r.pc);
}
void encode(Writer& w, const records::UnmapCluster& r) {
  w.uuid(r.uuid);
  w.u32(r.vc);
}
void encode(Writer& w, const records::Snapshot& r) {
  w.uuid(r.replica);
  w.uuid(r.snapshot);
  w.u64(r.created_ns);
  w.str<uint8_t>(r.name);
}
void encode(Writer& w, const records::Clone& r) {
  w.uuid(r.snapshot);
  w.uuid(r.clone);
  w.u64(r.created_ns);
  w.str<uint8_t>(r.name);
}
void encode(Writer& w, const records::Resize& r) {
  w.uuid(r.uuid);
  w.u64(r.size);
  w.u32(uint32_t(r.new_clusters.size()));
  for (uint32_t pc : r.new_clusters) w.u32(pc);
}
void encode(Writer& w, const records::SetProperty& r) {
  w.uuid(r.uuid);
  w.str<uint8_t>(r.key);
  w.str<uint16_t>(r.value);
}

// Decoders, one per kind: fields in order, then finish() (truncation or trailing bytes).

Result<MetaRecord> decode(Decoder& d, records::CreateObject& out) {
  ReplicaMeta& r = out.object;
  uint8_t thin = 0, flags = 0;
  uint32_t n = 0;
  d.uuid(r.uuid, "UUID");
  d.str<uint8_t>(r.name, "name");
  d.u64(r.size, "size");
  d.u8(thin, "thin flag");
  d.u64(r.created_ns, "creation time");
  const size_t flags_at = d.offset();
  d.u8(flags, "flags");
  d.uuid(r.parent, "parent UUID");
  d.uuid(r.source, "source UUID");
  d.u32(n, "map length");
  d.u32s(r.map, n, "map");
  if (!d.ok()) return d.status();
  if (flags & ~uint32_t(kFlagSnapshot | kFlagDiscarded)) {
    return d.invalid(flags_at, fmt::format("unknown flags {:#x}", flags));
  }
  r.thin = thin != 0;
  r.snapshot = flags & kFlagSnapshot;
  r.discarded = flags & kFlagDiscarded;
  uint16_t np = 0;
  d.u16(np, "property count");
  for (uint16_t i = 0; i < np && d.ok(); ++i) {
    const size_t at = d.offset();
    std::string k, v;
    d.str<uint8_t>(k, "property key");
    d.str<uint16_t>(v, "property value");
    if (!d.ok()) break;
    if (Status s = PoolState::ValidateProperty(k, v); !s.ok()) {
      return Status::Errorf(s.code(), "{} record (type {}): property at byte {}: {}", records::CreateObject::kName,
                            records::CreateObject::kType, at, s.message());
    }
    r.props[k] = std::move(v);
  }
  TERN_RETURN_IF_ERROR(d.finish());
  return MetaRecord(std::move(out));
}

Result<MetaRecord> decode(Decoder& d, records::Destroy& out) {
  d.uuid(out.uuid, "UUID");
  TERN_RETURN_IF_ERROR(d.finish());
  return MetaRecord(std::move(out));
}

Result<MetaRecord> decode(Decoder& d, records::MapCluster& out) {
  d.uuid(out.uuid, "UUID");
  d.u32(out.vc, "virtual cluster");
  d.u32(out.pc, "physical cluster");
  TERN_RETURN_IF_ERROR(d.finish());
  return MetaRecord(std::move(out));
}

Result<MetaRecord> decode(Decoder& d, records::UnmapCluster& out) {
  d.uuid(out.uuid, "UUID");
  d.u32(out.vc, "virtual cluster");
  TERN_RETURN_IF_ERROR(d.finish());
  return MetaRecord(std::move(out));
}

Result<MetaRecord> decode(Decoder& d, records::Snapshot& out) {
  d.uuid(out.replica, "replica UUID");
  d.uuid(out.snapshot, "snapshot UUID");
  d.u64(out.created_ns, "creation time");
  d.str<uint8_t>(out.name, "name");
  TERN_RETURN_IF_ERROR(d.finish());
  return MetaRecord(std::move(out));
}

Result<MetaRecord> decode(Decoder& d, records::Clone& out) {
  d.uuid(out.snapshot, "snapshot UUID");
  d.uuid(out.clone, "clone UUID");
  d.u64(out.created_ns, "creation time");
  d.str<uint8_t>(out.name, "name");
  TERN_RETURN_IF_ERROR(d.finish());
  return MetaRecord(std::move(out));
}

Result<MetaRecord> decode(Decoder& d, records::Resize& out) {
  uint32_t n = 0;
  d.uuid(out.uuid, "UUID");
  d.u64(out.size, "size");
  d.u32(n, "cluster count");
  d.u32s(out.new_clusters, n, "new clusters");
  TERN_RETURN_IF_ERROR(d.finish());
  return MetaRecord(std::move(out));
}

Result<MetaRecord> decode(Decoder& d, records::SetProperty& out) {
  d.uuid(out.uuid, "UUID");
  d.str<uint8_t>(out.key, "key");
  d.str<uint16_t>(out.value, "value");
  TERN_RETURN_IF_ERROR(d.finish());
  return MetaRecord(std::move(out));
}

// Decodes the kind whose type byte is `type`, if it is alternative I of MetaRecord or a later one.
template <size_t I = 0>
Result<MetaRecord> decode_kind(uint8_t type, std::span<const uint8_t> bytes) {
  if constexpr (I == std::variant_size_v<MetaRecord>) {
    return Status::Errorf(Errc::kCorruption, "unknown metadata record type {} (byte 0 of a {}-byte record)", type,
                          bytes.size());
  } else {
    using Kind = std::variant_alternative_t<I, MetaRecord>;
    if (type != Kind::kType) return decode_kind<I + 1>(type, bytes);
    Decoder d(bytes, type, Kind::kName);
    Kind out;
    return decode(d, out);
  }
}

}  // namespace

std::vector<uint8_t> EncodeRecord(const MetaRecord& record) {
  Writer w;
  std::visit(
      [&w](const auto& r) {
        w.u8(r.kType);
        encode(w, r);
      },
      record);
  return w.take();
}

std::vector<uint8_t> EncodeObjectRecord(const ReplicaMeta& object) {
  Writer w;
  w.u8(records::CreateObject::kType);
  encode_object(w, object);
  return w.take();
}

Result<MetaRecord> DecodeRecord(std::span<const uint8_t> bytes) {
  if (bytes.empty()) return Status::Errorf(Errc::kCorruption, "empty metadata record");
  return decode_kind(bytes[0], bytes);
}

std::string_view RecordName(const MetaRecord& record) {
  return std::visit([](const auto& r) { return r.kName; }, record);
}

uint8_t RecordType(const MetaRecord& record) {
  return std::visit([](const auto& r) { return r.kType; }, record);
}

}  // namespace tern::pool
