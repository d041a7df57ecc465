#include "nvmf/vendor.h"

#include <cstring>

namespace tern::nvmf::vendor {

std::vector<uint8_t> encode(const SnapshotCommand& c) {
  SnapshotCommandWire w;
  std::memset(&w, 0, sizeof(w));
  w.magic = kSnapshotMagic;
  w.version = kSnapshotVersion;
  const size_t n = std::min(c.name.size(), kMaxSnapshotName);
  w.name_len = uint16_t(n);
  std::memcpy(w.uuid, c.uuid.bytes().data(), 16);
  std::memcpy(w.name, c.name.data(), n);
  std::vector<uint8_t> out(sizeof(w));
  std::memcpy(out.data(), &w, sizeof(w));
  return out;
}

std::vector<uint8_t> encode(const BlockStatusReply& r) {
  BlockStatusWire w;
  std::memset(&w, 0, sizeof(w));
  w.magic = kBlockStatusMagic;
  w.version = kBlockStatusVersion;
  w.allocated = r.allocated ? 1 : 0;
  w.blocks = r.blocks;
  std::vector<uint8_t> out(sizeof(w));
  std::memcpy(out.data(), &w, sizeof(w));
  return out;
}

Result<BlockStatusReply> decode_block_status(const uint8_t* data, size_t len, uint64_t asked) {
  if (len < sizeof(BlockStatusWire)) {
    return Status::Errorf(Errc::kInval, "block status: {} bytes of data, {} expected", len, sizeof(BlockStatusWire));
  }
  BlockStatusWire w;
  std::memcpy(&w, data, sizeof(w));
  if (uint32_t(w.magic) != kBlockStatusMagic) return Status::Errorf(Errc::kInval, "block status: bad magic {:#x}", uint32_t(w.magic));
  if (uint16_t(w.version) != kBlockStatusVersion) {
    return Status::Errorf(Errc::kInval, "block status: version {} (this engine speaks {})", uint16_t(w.version),
                          kBlockStatusVersion);
  }
  if (w.allocated > 1) return Status::Errorf(Errc::kInval, "block status: allocated is {}", w.allocated);
  const uint64_t blocks = w.blocks;
  if (blocks == 0 || blocks > asked) {
    return Status::Errorf(Errc::kInval, "block status: a run of {} blocks for {} asked", blocks, asked);
  }
  return BlockStatusReply{w.allocated == 1, blocks};
}

Result<SnapshotCommand> decode_snapshot_command(const uint8_t* data, size_t len) {
  if (len < sizeof(SnapshotCommandWire)) {
    return Status::Errorf(Errc::kInval, "snapshot command: {} bytes of data, {} expected", len, sizeof(SnapshotCommandWire));
  }
  SnapshotCommandWire w;
  std::memcpy(&w, data, sizeof(w));
  if (w.magic != kSnapshotMagic) return Status::Errorf(Errc::kInval, "snapshot command: bad magic {:#x}", uint32_t(w.magic));
  if (w.version != kSnapshotVersion) {
    return Status::Errorf(Errc::kInval, "snapshot command: version {} (this engine speaks {})", uint16_t(w.version),
                          kSnapshotVersion);
  }
  const size_t n = w.name_len;
  if (n == 0 || n > kMaxSnapshotName) return Status::Errorf(Errc::kInval, "snapshot command: name length {}", n);
  SnapshotCommand c;
  c.name.assign(w.name, n);
  if (c.name.find('\0') != std::string::npos) return Status(Errc::kInval, "snapshot command: NUL in the name");
  std::array<uint8_t, 16> b;
  std::memcpy(b.data(), w.uuid, 16);
  c.uuid = Uuid(b);
  if (c.uuid.is_nil()) return Status(Errc::kInval, "snapshot command: nil UUID");
  return c;
}

nvme::CmdStatus status_for(Errc e) {
  if (e == Errc::kOk) return nvme::CmdStatus::Ok();
  const int v = int(e);
  return nvme::CmdStatus{nvme::Sct::kVendor, uint8_t(v > 0 && v < 256 ? v : int(Errc::kIo)), true, 0};
}

Errc errc_of(const nvme::CmdStatus& s) {
  if (s.ok()) return Errc::kOk;
  if (s.sct == nvme::Sct::kVendor && s.sc != 0) return Errc(s.sc);
  if (s.sct == nvme::Sct::kGeneric && s.sc == nvme::sc::kReservationConflict) return Errc::kAccess;
  return Errc::kIo;
}

}  // namespace tern::nvmf::vendor
