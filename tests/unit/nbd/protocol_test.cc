// The pure protocol functions: what the server parses, decides and sends, without sockets.
#include "nbd/protocol.h"

#include <gtest/gtest.h>

#include <cstring>

namespace tern::nbd::proto {
namespace {

std::vector<uint8_t> info_payload(const std::string& name, std::vector<uint16_t> infos) {
  std::vector<uint8_t> d(4 + name.size() + 2 + 2 * infos.size());
  store_be32(d.data(), uint32_t(name.size()));
  std::memcpy(d.data() + 4, name.data(), name.size());
  store_be16(d.data() + 4 + name.size(), uint16_t(infos.size()));
  for (size_t i = 0; i < infos.size(); ++i) store_be16(d.data() + 6 + name.size() + 2 * i, infos[i]);
  return d;
}

// Splits option replies: (type, payload) pairs; fails the test on a malformed stream.
std::vector<std::pair<uint32_t, std::vector<uint8_t>>> split_replies(const std::vector<uint8_t>& out, uint32_t opt) {
  std::vector<std::pair<uint32_t, std::vector<uint8_t>>> v;
  size_t at = 0;
  while (at < out.size()) {
    EXPECT_GE(out.size() - at, 20u);
    if (out.size() - at < 20) break;
    EXPECT_EQ(load_be64(&out[at]), kOptReplyMagic);
    EXPECT_EQ(load_be32(&out[at + 8]), opt);
    uint32_t len = load_be32(&out[at + 16]);
    EXPECT_LE(at + 20 + len, out.size());
    v.emplace_back(load_be32(&out[at + 12]), std::vector<uint8_t>(out.begin() + long(at) + 20, out.begin() + long(at + 20 + len)));
    at += 20 + len;
  }
  return v;
}

ExportDesc sample_export() {
  ExportDesc e;
  e.name = "vol";
  e.description = "tern device m0";
  e.size = 1 << 20;
  e.tx_flags = kTxHasFlags | kTxSendFlush;
  e.min_block = 512;
  e.preferred_block = 4096;
  e.max_block = 32 << 20;
  return e;
}

TEST(NbdProtocol, BigEndianCodecs) {
  uint8_t b[8];
  store_be64(b, 0x0102030405060708ull);
  EXPECT_EQ(b[0], 1);
  EXPECT_EQ(b[7], 8);
  EXPECT_EQ(load_be64(b), 0x0102030405060708ull);
  store_be32(b, 0xa1b2c3d4u);
  EXPECT_EQ(load_be32(b), 0xa1b2c3d4u);
  store_be16(b, 0xbeef);
  EXPECT_EQ(load_be16(b), 0xbeef);
}

TEST(NbdProtocol, GreetingOffersFixedNewstyleAndNoZeroes) {
  uint8_t g[kGreetingLen];
  build_greeting(g);
  EXPECT_EQ(std::memcmp(g, "NBDMAGICIHAVEOPT", 16), 0);
  EXPECT_EQ(load_be16(g + 16), kFlagFixedNewstyle | kFlagNoZeroes);
}

TEST(NbdProtocol, ClientFlags) {
  auto a = parse_client_flags(kClientFixedNewstyle);
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(a->no_zeroes);
  auto b = parse_client_flags(kClientFixedNewstyle | kClientNoZeroes);
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->no_zeroes);
  EXPECT_FALSE(parse_client_flags(0).ok());  // plain newstyle: refused
  EXPECT_FALSE(parse_client_flags(kClientFixedNewstyle | 4).ok());
  EXPECT_FALSE(parse_client_flags(0x80000001u).ok());
}

TEST(NbdProtocol, OptionHeader) {
  uint8_t h[16];
  store_be64(h, kOptMagic);
  store_be32(h + 8, kOptGo);
  store_be32(h + 12, 12);
  EXPECT_EQ(parse_option_header(h, 15).kind, OptionHeader::Kind::kNeedMore);
  OptionHeader o = parse_option_header(h, 16);
  EXPECT_EQ(o.kind, OptionHeader::Kind::kOk);
  EXPECT_EQ(o.option, kOptGo);
  EXPECT_EQ(o.length, 12u);
  store_be32(h + 12, uint32_t(kMaxOptionLen + 1));
  EXPECT_EQ(parse_option_header(h, 16).kind, OptionHeader::Kind::kTooLong);
  store_be32(h + 12, 0xffffffffu);
  EXPECT_EQ(parse_option_header(h, 16).kind, OptionHeader::Kind::kTooLong);
  h[0] ^= 1;
  EXPECT_EQ(parse_option_header(h, 16).kind, OptionHeader::Kind::kBadMagic);
}

TEST(NbdProtocol, InfoQuery) {
  auto d = info_payload("disk", {kInfoBlockSize, kInfoName, 77});
  auto q = parse_info_query(d.data(), d.size());
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->name, "disk");
  EXPECT_TRUE(q->want_block_size);
  EXPECT_TRUE(q->want_name);
  EXPECT_FALSE(q->want_description);
  auto empty = info_payload("", {});
  ASSERT_TRUE(parse_info_query(empty.data(), empty.size()).ok());
  // Shorter than the fixed part; a name longer than the data; a request count that does not match.
  EXPECT_EQ(parse_info_query(d.data(), 5).code(), Errc::kInval);
  auto bad = d;
  store_be32(bad.data(), 1000);
  EXPECT_EQ(parse_info_query(bad.data(), bad.size()).code(), Errc::kInval);
  bad = d;
  store_be16(bad.data() + 8, 4);
  EXPECT_EQ(parse_info_query(bad.data(), bad.size()).code(), Errc::kInval);
  bad = d;
  bad.push_back(0);
  EXPECT_EQ(parse_info_query(bad.data(), bad.size()).code(), Errc::kInval);
}

TEST(NbdProtocol, GoRepliesInfoThenAck) {
  auto d = info_payload("vol", {kInfoName, kInfoDescription});
  OptionLookup l;
  l.found = true;
  l.desc = sample_export();
  std::vector<uint8_t> out;
  OptionOutcome o = answer_option(kOptGo, d.data(), d.size(), ClientFlags{}, l, out);
  EXPECT_EQ(o.next, OptionOutcome::Next::kTransmission);
  auto r = split_replies(out, kOptGo);
  ASSERT_EQ(r.size(), 5u);  // EXPORT, BLOCK_SIZE, NAME, DESCRIPTION, ACK
  EXPECT_EQ(r[0].first, kRepInfo);
  ASSERT_EQ(r[0].second.size(), 12u);
  EXPECT_EQ(load_be16(r[0].second.data()), kInfoExport);
  EXPECT_EQ(load_be64(r[0].second.data() + 2), 1u << 20);
  EXPECT_EQ(load_be16(r[0].second.data() + 10), kTxHasFlags | kTxSendFlush);
  ASSERT_EQ(r[1].second.size(), 14u);
  EXPECT_EQ(load_be16(r[1].second.data()), kInfoBlockSize);
  EXPECT_EQ(load_be32(r[1].second.data() + 2), 512u);
  EXPECT_EQ(load_be32(r[1].second.data() + 6), 4096u);
  EXPECT_EQ(load_be32(r[1].second.data() + 10), 32u << 20);
  EXPECT_EQ(std::string(r[2].second.begin() + 2, r[2].second.end()), "vol");
  EXPECT_EQ(std::string(r[3].second.begin() + 2, r[3].second.end()), "tern device m0");
  EXPECT_EQ(r[4].first, kRepAck);
  EXPECT_TRUE(r[4].second.empty());
  // INFO: the same replies, and the negotiation goes on.
  out.clear();
  EXPECT_EQ(answer_option(kOptInfo, d.data(), d.size(), ClientFlags{}, l, out).next, OptionOutcome::Next::kOptions);
  EXPECT_EQ(split_replies(out, kOptInfo).size(), 5u);
}

TEST(NbdProtocol, UnknownExportAndMalformedQueries) {
  auto d = info_payload("nope", {});
  std::vector<uint8_t> out;
  EXPECT_EQ(answer_option(kOptGo, d.data(), d.size(), ClientFlags{}, OptionLookup{}, out).next,
            OptionOutcome::Next::kOptions);
  auto r = split_replies(out, kOptGo);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].first, kRepErrUnknown);
  EXPECT_NE(std::string(r[0].second.begin(), r[0].second.end()).find("nope"), std::string::npos);
  out.clear();
  uint8_t junk[3] = {0, 0, 9};
  EXPECT_EQ(plan_option(kOptInfo, junk, sizeof(junk)).need, OptionPlan::Need::kNothing);
  answer_option(kOptInfo, junk, sizeof(junk), ClientFlags{}, OptionLookup{}, out);
  r = split_replies(out, kOptInfo);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].first, kRepErrInvalid);
  // EXPORT_NAME has no error reply: unknown names end the session.
  out.clear();
  const uint8_t name[] = {'x'};
  EXPECT_EQ(answer_option(kOptExportName, name, 1, ClientFlags{}, OptionLookup{}, out).next,
            OptionOutcome::Next::kClose);
  EXPECT_TRUE(out.empty());
}

TEST(NbdProtocol, ExportNameReplyHonoursNoZeroes) {
  OptionLookup l;
  l.found = true;
  l.desc = sample_export();
  std::vector<uint8_t> out;
  const uint8_t name[] = {'v', 'o', 'l'};
  EXPECT_EQ(answer_option(kOptExportName, name, 3, ClientFlags{false}, l, out).next, OptionOutcome::Next::kTransmission);
  ASSERT_EQ(out.size(), 134u);
  EXPECT_EQ(load_be64(out.data()), 1u << 20);
  EXPECT_EQ(load_be16(out.data() + 8), kTxHasFlags | kTxSendFlush);
  for (size_t i = 10; i < out.size(); ++i) ASSERT_EQ(out[i], 0);
  out.clear();
  answer_option(kOptExportName, name, 3, ClientFlags{true}, l, out);
  EXPECT_EQ(out.size(), 10u);
}

TEST(NbdProtocol, ListAbortAndUnsupported) {
  OptionLookup l;
  l.names = {"a", "bb"};
  std::vector<uint8_t> out;
  EXPECT_EQ(plan_option(kOptList, nullptr, 0).need, OptionPlan::Need::kList);
  answer_option(kOptList, nullptr, 0, ClientFlags{}, l, out);
  auto r = split_replies(out, kOptList);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].first, kRepServer);
  EXPECT_EQ(load_be32(r[1].second.data()), 2u);
  EXPECT_EQ(std::string(r[1].second.begin() + 4, r[1].second.end()), "bb");
  EXPECT_EQ(r[2].first, kRepAck);
  // LIST takes no data.
  out.clear();
  uint8_t x = 1;
  EXPECT_EQ(plan_option(kOptList, &x, 1).need, OptionPlan::Need::kNothing);
  answer_option(kOptList, &x, 1, ClientFlags{}, l, out);
  EXPECT_EQ(split_replies(out, kOptList)[0].first, kRepErrInvalid);
  out.clear();
  EXPECT_EQ(answer_option(kOptAbort, nullptr, 0, ClientFlags{}, l, out).next, OptionOutcome::Next::kCloseAfterReply);
  EXPECT_EQ(split_replies(out, kOptAbort)[0].first, kRepAck);
  for (uint32_t opt : {kOptStartTls, kOptStructuredReply, 4u, 9u, 10u, 11u, 12345u}) {
    out.clear();
    EXPECT_EQ(answer_option(opt, nullptr, 0, ClientFlags{}, l, out).next, OptionOutcome::Next::kOptions);
    auto u = split_replies(out, opt);
    ASSERT_EQ(u.size(), 1u);
    EXPECT_EQ(u[0].first, kRepErrUnsup) << opt;
  }
}

TEST(NbdProtocol, RequestParsing) {
  uint8_t b[kRequestLen];
  store_be32(b, kRequestMagic);
  store_be16(b + 4, kCmdFlagFua);
  store_be16(b + 6, kCmdWrite);
  store_be64(b + 8, 0xdeadbeefcafef00dull);
  store_be64(b + 16, 4096);
  store_be32(b + 24, 8192);
  Request r;
  ASSERT_TRUE(parse_request(b, &r));
  EXPECT_EQ(r.flags, kCmdFlagFua);
  EXPECT_EQ(r.type, kCmdWrite);
  EXPECT_EQ(r.cookie, 0xdeadbeefcafef00dull);
  EXPECT_EQ(r.offset, 4096u);
  EXPECT_EQ(r.length, 8192u);
  b[0] = 0;
  EXPECT_FALSE(parse_request(b, &r));
  uint8_t rep[kSimpleReplyLen];
  build_simple_reply(rep, kEInval, 77);
  EXPECT_EQ(load_be32(rep), kSimpleReplyMagic);
  EXPECT_EQ(load_be32(rep + 4), kEInval);
  EXPECT_EQ(load_be64(rep + 8), 77u);
}

Verdict check(uint16_t type, uint64_t off, uint32_t len, uint16_t flags = 0, bool ro = false) {
  Geometry g;
  g.size = 1 << 20;
  g.block_size = 512;
  g.max_payload = 64 << 10;
  g.read_only = ro;
  Request r;
  r.type = type;
  r.offset = off;
  r.length = len;
  r.flags = flags;
  return check_request(r, g);
}

TEST(NbdProtocol, RequestChecks) {
  using A = Verdict::Action;
  EXPECT_EQ(check(kCmdRead, 0, 4096).action, A::kExecute);
  EXPECT_EQ(check(kCmdRead, 0, 4096, kCmdFlagFua).action, A::kExecute);  // FUA is accepted everywhere
  EXPECT_EQ(check(kCmdRead, (1 << 20) - 512, 512).action, A::kExecute);
  // Out of range and misaligned: EINVAL for reads and trims, ENOSPC for writes past the end.
  EXPECT_EQ(check(kCmdRead, (1 << 20) - 512, 1024).error, kEInval);
  EXPECT_EQ(check(kCmdRead, ~0ull - 100, 512).error, kEInval);
  EXPECT_EQ(check(kCmdRead, 100, 512).error, kEInval);
  EXPECT_EQ(check(kCmdRead, 0, 100).error, kEInval);
  EXPECT_EQ(check(kCmdTrim, 1 << 20, 512).error, kEInval);
  Verdict w = check(kCmdWrite, 1 << 20, 512);
  EXPECT_EQ(w.error, kENoSpc);
  EXPECT_EQ(w.payload, 512u);  // still read, and dropped
  EXPECT_EQ(check(kCmdWrite, 100, 512).error, kEInval);
  EXPECT_EQ(check(kCmdWriteZeroes, 1 << 20, 512).error, kENoSpc);
  EXPECT_EQ(check(kCmdWriteZeroes, 0, 4096, kCmdFlagNoHole | kCmdFlagFua).action, A::kExecute);
  // Flags that do not belong to the command.
  EXPECT_EQ(check(kCmdRead, 0, 512, kCmdFlagNoHole).error, kEInval);
  EXPECT_EQ(check(kCmdWrite, 0, 512, 1u << 2).error, kEInval);
  EXPECT_EQ(check(kCmdWrite, 0, 512, 1u << 2).payload, 512u);
  // Zero lengths are harmless no-ops.
  EXPECT_EQ(check(kCmdRead, 0, 0).action, A::kReply);
  EXPECT_EQ(check(kCmdRead, 0, 0).error, 0u);
  // Read-only exports.
  EXPECT_EQ(check(kCmdWrite, 0, 512, 0, true).error, kEPerm);
  EXPECT_EQ(check(kCmdTrim, 0, 512, 0, true).error, kEPerm);
  EXPECT_EQ(check(kCmdWriteZeroes, 0, 512, 0, true).error, kEPerm);
  EXPECT_EQ(check(kCmdFlush, 0, 0, 0, true).action, A::kReply);
  EXPECT_EQ(check(kCmdFlush, 0, 0, 0, true).error, 0u);
  EXPECT_EQ(check(kCmdRead, 0, 512, 0, true).action, A::kExecute);
  // Longer than the maximum block size: the connection closes (it cannot be skipped safely).
  EXPECT_EQ(check(kCmdRead, 0, (64 << 10) + 512).action, A::kClose);
  EXPECT_EQ(check(kCmdWrite, 0, 0xffffffffu).action, A::kClose);
  // TRIM and WRITE_ZEROES carry no payload: any length in range is fine.
  EXPECT_EQ(check(kCmdTrim, 0, 1 << 20).action, A::kExecute);
  EXPECT_EQ(check(kCmdDisc, 0, 0).action, A::kDisc);
  for (uint16_t t : {uint16_t(5), uint16_t(7), uint16_t(8), uint16_t(999)}) {
    Verdict v = check(t, 0, 512);
    EXPECT_EQ(v.action, A::kReply);
    EXPECT_EQ(v.error, kEInval);
    EXPECT_EQ(v.payload, 0u);
  }
}

TEST(NbdProtocol, ErrorMapping) {
  EXPECT_EQ(error_from_errc(Errc::kOk), 0u);
  EXPECT_EQ(error_from_errc(Errc::kPerm), kEPerm);
  EXPECT_EQ(error_from_errc(Errc::kNoSpc), kENoSpc);
  EXPECT_EQ(error_from_errc(Errc::kRange), kEInval);
  EXPECT_EQ(error_from_errc(Errc::kNotSup), kENotSup);
  EXPECT_EQ(error_from_errc(Errc::kNoDev), kEShutdown);
  EXPECT_EQ(error_from_errc(Errc::kMediaError), kEIo);
  EXPECT_EQ(error_from_errc(Errc::kTimedOut), kEIo);
  EXPECT_EQ(error_from_errc(Errc::kNoMem), kEIo);
}

}  // namespace
}  // namespace tern::nbd::proto
