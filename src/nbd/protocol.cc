#include "nbd/protocol.h"

#include <cstring>

namespace tern::nbd::proto {

const char* option_name(uint32_t opt) {
  switch (opt) {
    case kOptExportName: return "EXPORT_NAME";
    case kOptAbort: return "ABORT";
    case kOptList: return "LIST";
    case 4: return "PEEK_EXPORT";
    case kOptStartTls: return "STARTTLS";
    case kOptInfo: return "INFO";
    case kOptGo: return "GO";
    case kOptStructuredReply: return "STRUCTURED_REPLY";
    case 9: return "LIST_META_CONTEXT";
    case 10: return "SET_META_CONTEXT";
    case 11: return "EXTENDED_HEADERS";
    default: return "unknown";
  }
}

const char* command_name(uint16_t type) {
  switch (type) {
    case kCmdRead: return "READ";
    case kCmdWrite: return "WRITE";
    case kCmdDisc: return "DISC";
    case kCmdFlush: return "FLUSH";
    case kCmdTrim: return "TRIM";
    case 5: return "CACHE";
    case kCmdWriteZeroes: return "WRITE_ZEROES";
    case 7: return "BLOCK_STATUS";
    case 8: return "RESIZE";
    default: return "unknown";
  }
}

uint32_t error_from_errc(Errc e) {
  switch (e) {
    case Errc::kOk: return 0;
    case Errc::kPerm:
    case Errc::kAccess: return kEPerm;
    case Errc::kNoSpc:
    case Errc::kFBig: return kENoSpc;
    case Errc::kRange:
    case Errc::kInval: return kEInval;
    case Errc::kNotSup: return kENotSup;
    // The device is going away (forced removal): the client should disconnect rather than retry.
    case Errc::kNoDev:
    case Errc::kShutdown: return kEShutdown;
    default: return kEIo;  // media errors, timeouts, resets, and ENOMEM (which a server should not send)
  }
}

// ---------------------------------------------------------------------------------------------------
// Handshake

void build_greeting(uint8_t out[kGreetingLen]) {
  store_be64(out, kInitMagic);
  store_be64(out + 8, kOptMagic);
  store_be16(out + 16, kFlagFixedNewstyle | kFlagNoZeroes);
}

Result<ClientFlags> parse_client_flags(uint32_t flags) {
  if (flags & ~(kClientFixedNewstyle | kClientNoZeroes)) {
    return Status::Errorf(Errc::kProto, "client flags {:#x} have bits this server did not offer", flags);
  }
  if (!(flags & kClientFixedNewstyle)) {
    return Status(Errc::kProto, "the client does not speak fixed newstyle negotiation (the only kind served)");
  }
  ClientFlags cf;
  cf.no_zeroes = flags & kClientNoZeroes;
  return cf;
}

OptionHeader parse_option_header(const uint8_t* p, size_t n) {
  OptionHeader h;
  if (n < kOptionHeaderLen) return h;
  if (load_be64(p) != kOptMagic) {
    h.kind = OptionHeader::Kind::kBadMagic;
    return h;
  }
  h.option = load_be32(p + 8);
  h.length = load_be32(p + 12);
  h.kind = h.length > kMaxOptionLen ? OptionHeader::Kind::kTooLong : OptionHeader::Kind::kOk;
  return h;
}

Result<InfoQuery> parse_info_query(const uint8_t* p, size_t n) {
  if (n < 6) return Status::Errorf(Errc::kInval, "option data of {} bytes is shorter than 6", n);
  const uint32_t name_len = load_be32(p);
  if (name_len > n - 6) {
    return Status::Errorf(Errc::kInval, "export name length {} does not fit in {} bytes of option data", name_len, n);
  }
  InfoQuery q;
  q.name = std::string_view(reinterpret_cast<const char*>(p + 4), name_len);
  const uint8_t* r = p + 4 + name_len;
  const uint16_t count = load_be16(r);
  const size_t rest = n - 6 - name_len;
  if (rest != size_t(count) * 2) {
    return Status::Errorf(Errc::kInval, "{} information requests need {} bytes, the option has {}", count,
                          size_t(count) * 2, rest);
  }
  for (uint16_t i = 0; i < count; ++i) {
    switch (load_be16(r + 2 + 2 * size_t(i))) {
      case kInfoName: q.want_name = true; break;
      case kInfoDescription: q.want_description = true; break;
      case kInfoBlockSize: q.want_block_size = true; break;
      default: break;  // NBD_INFO_EXPORT is always sent; unknown requests are ignored (specification)
    }
  }
  return q;
}

void append_option_reply(std::vector<uint8_t>& out, uint32_t opt, uint32_t type, const void* data, size_t len) {
  size_t at = out.size();
  out.resize(at + 20 + len);
  uint8_t* p = out.data() + at;
  store_be64(p, kOptReplyMagic);
  store_be32(p + 8, opt);
  store_be32(p + 12, type);
  store_be32(p + 16, uint32_t(len));
  if (len) std::memcpy(p + 20, data, len);
}

void append_option_error(std::vector<uint8_t>& out, uint32_t opt, uint32_t type, std::string_view message) {
  append_option_reply(out, opt, type, message.data(), std::min(message.size(), kMaxNameLen));
}

void append_server_entry(std::vector<uint8_t>& out, std::string_view name) {
  std::vector<uint8_t> d(4 + name.size());
  store_be32(d.data(), uint32_t(name.size()));
  std::memcpy(d.data() + 4, name.data(), name.size());
  append_option_reply(out, kOptList, kRepServer, d.data(), d.size());
}

namespace {

void append_info_string(std::vector<uint8_t>& out, uint32_t opt, uint16_t type, std::string_view s) {
  std::vector<uint8_t> d(2 + s.size());
  store_be16(d.data(), type);
  std::memcpy(d.data() + 2, s.data(), s.size());
  append_option_reply(out, opt, kRepInfo, d.data(), d.size());
}

}  // namespace

void append_info_replies(std::vector<uint8_t>& out, uint32_t opt, const InfoQuery& q, const ExportDesc& e) {
  uint8_t ex[12];
  store_be16(ex, kInfoExport);
  store_be64(ex + 2, e.size);
  store_be16(ex + 10, e.tx_flags);
  append_option_reply(out, opt, kRepInfo, ex, sizeof(ex));
  uint8_t bs[14];
  store_be16(bs, kInfoBlockSize);
  store_be32(bs + 2, e.min_block);
  store_be32(bs + 6, e.preferred_block);
  store_be32(bs + 10, e.max_block);
  append_option_reply(out, opt, kRepInfo, bs, sizeof(bs));
  if (q.want_name) append_info_string(out, opt, kInfoName, e.name);
  if (q.want_description && !e.description.empty()) append_info_string(out, opt, kInfoDescription, e.description);
}

void append_export_name_reply(std::vector<uint8_t>& out, const ExportDesc& e, bool no_zeroes) {
  size_t at = out.size();
  out.resize(at + 10 + (no_zeroes ? 0 : 124), 0);
  store_be64(out.data() + at, e.size);
  store_be16(out.data() + at + 8, e.tx_flags);
}

// ---------------------------------------------------------------------------------------------------
// Transmission

bool parse_request(const uint8_t* p, Request* r) {
  if (load_be32(p) != kRequestMagic) return false;
  r->flags = load_be16(p + 4);
  r->type = load_be16(p + 6);
  r->cookie = load_be64(p + 8);
  r->offset = load_be64(p + 16);
  r->length = load_be32(p + 24);
  return true;
}

Verdict check_request(const Request& r, const Geometry& g) {
  Verdict v;
  auto reply = [&v](uint32_t err) {
    v.action = Verdict::Action::kReply;
    v.error = err;
    return v;
  };
  const uint64_t bs = g.block_size;
  const bool aligned = r.offset % bs == 0 && r.length % bs == 0;
  const bool in_range = r.offset <= g.size && r.length <= g.size - r.offset;
  // FUA is accepted on every command (the specification requires it once SEND_FUA is advertised).
  const uint16_t allowed = kCmdFlagFua | (r.type == kCmdWriteZeroes ? kCmdFlagNoHole : 0);
  switch (r.type) {
    case kCmdRead:
      if (r.length > g.max_payload) {
        v.action = Verdict::Action::kClose;
        v.why = "READ longer than the maximum block size";
        return v;
      }
      if (r.flags & ~allowed) return reply(kEInval);
      if (!aligned || !in_range) return reply(kEInval);
      if (r.length == 0) return reply(0);
      return v;
    case kCmdWrite:
      if (r.length > g.max_payload) {
        v.action = Verdict::Action::kClose;
        v.why = "WRITE longer than the maximum block size";
        return v;
      }
      v.payload = r.length;  // read (or discarded) whatever the answer is
      if (r.flags & ~allowed) return reply(kEInval);
      if (g.read_only) return reply(kEPerm);
      if (!aligned) return reply(kEInval);
      if (!in_range) return reply(kENoSpc);
      if (r.length == 0) return reply(0);
      return v;
    case kCmdDisc:
      v.action = Verdict::Action::kDisc;
      return v;
    case kCmdFlush:
      if (r.flags & ~allowed) return reply(kEInval);
      // Nothing was written through a read-only export, so there is nothing of its to flush.
      if (g.read_only) return reply(0);
      return v;
    case kCmdTrim:
      if (r.flags & ~allowed) return reply(kEInval);
      if (g.read_only) return reply(kEPerm);
      if (!aligned || !in_range) return reply(kEInval);
      if (r.length == 0) return reply(0);
      return v;
    case kCmdWriteZeroes:
      if (r.flags & ~allowed) return reply(kEInval);
      if (g.read_only) return reply(kEPerm);
      if (!aligned) return reply(kEInval);
      if (!in_range) return reply(kENoSpc);
      if (r.length == 0) return reply(0);
      return v;
    default:
      // Unknown commands (and ones never negotiated: CACHE, BLOCK_STATUS, RESIZE) carry no payload we
      // could know of; the specification asks for EINVAL.
      return reply(kEInval);
  }
}

void build_simple_reply(uint8_t* out, uint32_t error, uint64_t cookie) {
  store_be32(out, kSimpleReplyMagic);
  store_be32(out + 4, error);
  store_be64(out + 8, cookie);
}

// ---------------------------------------------------------------------------------------------------
// Options

OptionPlan plan_option(uint32_t opt, const uint8_t* data, size_t len) {
  OptionPlan p;
  switch (opt) {
    case kOptExportName:
      p.need = OptionPlan::Need::kExport;
      p.name.assign(reinterpret_cast<const char*>(data), len);
      return p;
    case kOptList:
      if (len == 0) p.need = OptionPlan::Need::kList;
      return p;
    case kOptInfo:
    case kOptGo: {
      auto q = parse_info_query(data, len);
      if (q.ok()) {
        p.need = OptionPlan::Need::kExport;
        p.name = std::string(q->name);
      }
      return p;
    }
    default:
      return p;
  }
}

OptionOutcome answer_option(uint32_t opt, const uint8_t* data, size_t len, const ClientFlags& cf,
                            const OptionLookup& lookup, std::vector<uint8_t>& out) {
  OptionOutcome o;
  switch (opt) {
    case kOptExportName:
      if (!lookup.found) {
        // This option has no error reply: the specification says to end the session.
        o.next = OptionOutcome::Next::kClose;
        o.log = "EXPORT_NAME for an unknown export";
        return o;
      }
      append_export_name_reply(out, lookup.desc, cf.no_zeroes);
      o.next = OptionOutcome::Next::kTransmission;
      return o;
    case kOptAbort:
      append_option_reply(out, opt, kRepAck);
      o.next = OptionOutcome::Next::kCloseAfterReply;
      return o;
    case kOptList:
      if (len != 0) {
        append_option_error(out, opt, kRepErrInvalid, "NBD_OPT_LIST takes no data");
        return o;
      }
      for (const std::string& n : lookup.names) append_server_entry(out, n);
      append_option_reply(out, opt, kRepAck);
      return o;
    case kOptInfo:
    case kOptGo: {
      auto q = parse_info_query(data, len);
      if (!q.ok()) {
        append_option_error(out, opt, kRepErrInvalid, q.status().message());
        return o;
      }
      if (!lookup.found) {
        std::string msg = "no export named '" + std::string(q->name) + "'";
        append_option_error(out, opt, kRepErrUnknown, msg);
        return o;
      }
      append_info_replies(out, opt, *q, lookup.desc);
      append_option_reply(out, opt, kRepAck);
      if (opt == kOptGo) o.next = OptionOutcome::Next::kTransmission;
      return o;
    }
    default: {
      std::string msg = std::string("option ") + option_name(opt) + " (" + std::to_string(opt) +
                        ") is not supported by this server";
      append_option_error(out, opt, kRepErrUnsup, msg);
      return o;
    }
  }
}

}  // namespace tern::nbd::proto
