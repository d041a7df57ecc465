// libFuzzer target for the NBD server's parsers and decisions (src/nbd/protocol.h): the client flags, the
// option stream of the handshake (headers, INFO/GO queries, the answers built for a fixed export table)
// and the request stream of the transmission phase (headers, the verdict on each). These are the exact
// functions the server runs on every byte a client sends; the socket plumbing around them is covered
// by tests/unit/nbd and the real clients of tests/system/test_nbd.py.
//
// Input: byte 0 picks the export geometry (block size, read-only) and the mode; the rest is what a client
// sends after the greeting: 4 bytes of client flags, options until one enters transmission, then
// requests (each WRITE followed by its payload). Mode bit 0x80 skips the handshake and starts with
// requests.
//
// Properties checked besides "no crash, no sanitizer report": every option answer is a well-formed
// sequence of option replies echoing the option (or the EXPORT_NAME answer of exactly 10 or 134 bytes);
// GO/INFO answers for known exports carry NBD_INFO_EXPORT with the export's size before NBD_REP_ACK;
// an option is never read past its declared length; a request the verdict executes is aligned, in range,
// non-empty and no longer than the maximum payload; only WRITEs carry a payload, never longer than the
// maximum; read-only exports never execute writes.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "nbd/protocol.h"

using namespace tern;
using namespace tern::nbd::proto;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

struct Export {
  const char* name;
  uint64_t size;
};
const Export kExports[] = {{"vol", 64 << 20}, {"a", 4096}, {"big", 1ull << 40}};

ExportDesc describe(const Export& e, uint32_t bs, bool ro) {
  ExportDesc d;
  d.name = e.name;
  d.description = "fuzz";
  d.size = e.size;
  d.tx_flags = kTxHasFlags | kTxSendFlush | kTxSendFua | kTxCanMultiConn | (ro ? kTxReadOnly : kTxSendTrim);
  d.min_block = bs;
  d.preferred_block = bs < 4096 ? 4096 : bs;
  d.max_block = 32u << 20;
  return d;
}

// Checks an answer built by answer_option and returns whether it was a GO/INFO success carrying `size`.
void check_answer(uint32_t opt, const std::vector<uint8_t>& out, const OptionOutcome& o, const OptionLookup& l,
                  bool no_zeroes) {
  if (opt == kOptExportName) {
    if (o.next == OptionOutcome::Next::kClose) {
      check(out.empty() && !l.found);
      return;
    }
    check(o.next == OptionOutcome::Next::kTransmission && l.found);
    check(out.size() == (no_zeroes ? 10u : 134u));
    check(load_be64(out.data()) == l.desc.size);
    return;
  }
  check(o.next != OptionOutcome::Next::kClose);
  size_t at = 0;
  bool saw_export = false, saw_ack = false;
  uint32_t last = 0;
  while (at < out.size()) {
    check(out.size() - at >= 20);
    check(load_be64(&out[at]) == kOptReplyMagic);
    check(load_be32(&out[at + 8]) == opt);
    last = load_be32(&out[at + 12]);
    const uint32_t len = load_be32(&out[at + 16]);
    check(out.size() - at - 20 >= len);
    check(!saw_ack);  // nothing after the final reply
    if (last == kRepInfo) {
      check(len >= 2);
      const uint16_t type = load_be16(&out[at + 20]);
      if (type == kInfoExport) {
        check(len == 12 && load_be64(&out[at + 22]) == l.desc.size);
        saw_export = true;
      }
      if (type == kInfoBlockSize) check(len == 14);
    }
    if (last == kRepAck || (last & 0x80000000u)) saw_ack = true;
    at += 20 + len;
  }
  check(saw_ack);  // every option gets a final reply
  if ((opt == kOptGo || opt == kOptInfo) && last == kRepAck) check(saw_export && l.found);
  if (o.next == OptionOutcome::Next::kTransmission) check(opt == kOptGo && last == kRepAck);
}

// Runs the handshake part; returns the offset where requests start, or size if the session ended.
size_t handshake(const uint8_t* p, size_t n, uint32_t bs, bool ro) {
  if (n < 4) return n;
  auto cf = parse_client_flags(load_be32(p));
  if (!cf.ok()) return n;  // the server closes
  size_t at = 4;
  std::vector<uint8_t> out;
  for (int options = 0; options < 64; ++options) {
    OptionHeader h = parse_option_header(p + at, n - at);
    if (h.kind != OptionHeader::Kind::kOk) return n;  // need more (the client went quiet), or closed
    check(h.length <= kMaxOptionLen);
    if (n - at - kOptionHeaderLen < h.length) return n;
    // The option's data, copied to its own buffer so any over-read is caught by ASan.
    std::vector<uint8_t> data(p + at + kOptionHeaderLen, p + at + kOptionHeaderLen + h.length);
    at += kOptionHeaderLen + h.length;
    OptionPlan plan = plan_option(h.option, data.data(), data.size());
    OptionLookup l;
    if (plan.need == OptionPlan::Need::kList) {
      for (const Export& e : kExports) l.names.push_back(e.name);
    } else if (plan.need == OptionPlan::Need::kExport) {
      for (const Export& e : kExports) {
        if (plan.name == e.name) {
          l.found = true;
          l.desc = describe(e, bs, ro);
        }
      }
    }
    out.clear();
    OptionOutcome o = answer_option(h.option, data.data(), data.size(), *cf, l, out);
    check_answer(h.option, out, o, l, cf->no_zeroes);
    switch (o.next) {
      case OptionOutcome::Next::kOptions: break;
      case OptionOutcome::Next::kTransmission: return at;
      default: return n;
    }
  }
  return n;
}

void requests(const uint8_t* p, size_t n, const Geometry& g) {
  size_t at = 0;
  for (int count = 0; count < 4096 && n - at >= kRequestLen; ++count) {
    Request r;
    if (!parse_request(p + at, &r)) return;  // the server closes
    at += kRequestLen;
    const Verdict v = check_request(r, g);
    switch (v.action) {
      case Verdict::Action::kClose:
      case Verdict::Action::kDisc:
        check(v.payload == 0);
        return;
      case Verdict::Action::kExecute:
        check(r.type == kCmdRead || r.type == kCmdWrite || r.type == kCmdFlush || r.type == kCmdTrim ||
              r.type == kCmdWriteZeroes);
        if (r.type != kCmdFlush) {
          check(r.length > 0 && r.length % g.block_size == 0 && r.offset % g.block_size == 0);
          check(r.offset < g.size && r.length <= g.size - r.offset);
        }
        if (r.type == kCmdRead || r.type == kCmdWrite) check(r.length <= g.max_payload);
        if (g.read_only) check(r.type == kCmdRead || r.type == kCmdFlush);
        check(v.payload == (r.type == kCmdWrite ? r.length : 0));
        break;
      case Verdict::Action::kReply:
        check(v.payload == 0 || r.type == kCmdWrite);
        // Success without the device: only the zero-length no-ops and a read-only export's flush.
        if (v.error == 0) check(r.length == 0 || (r.type == kCmdFlush && g.read_only));
        break;
    }
    check(v.payload <= g.max_payload);
    // The payload follows the header (read into buffers or dropped).
    if (v.payload > n - at) return;
    at += v.payload;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const uint32_t bs = (mode & 1) ? 4096 : 512;
  const bool ro = mode & 2;
  Geometry g;
  g.size = kExports[(mode >> 2) % 3].size;
  g.block_size = bs;
  g.max_payload = (mode & 0x20) ? (64u << 10) : (32u << 20);
  g.read_only = ro;
  const uint8_t* p = data + 1;
  const size_t n = size - 1;
  size_t at = (mode & 0x80) ? 0 : handshake(p, n, bs, ro);
  if (at < n) requests(p + at, n - at, g);
  // The INFO/GO query parser on its own, on the raw bytes.
  auto q = parse_info_query(p, n);
  if (q.ok()) check(q->name.size() + 6 <= n && q->name.data() >= reinterpret_cast<const char*>(p) + 4);
  return 0;
}
