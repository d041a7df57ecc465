#include "nvmf/host/admin_client.h"

#include <algorithm>
#include <cstring>

#include "common/clock.h"
#include "reactor/reactor.h"

namespace tern::nvmf {

using namespace nvme;

namespace {

Sqe property_cmd(uint8_t fct, uint32_t ofst, uint64_t value, bool size8) {
  PropertyCmd p;
  std::memset(&p, 0, sizeof(p));
  p.opc = opc::kFabrics;
  p.fctype = fct;
  p.attrib = size8 ? 1 : 0;
  p.ofst = ofst;
  p.value = value;
  Sqe s;
  std::memcpy(&s, &p, sizeof(s));
  return s;
}

Sqe identify_cmd(uint8_t cns_value, uint32_t nsid) {
  Sqe s;
  std::memset(&s, 0, sizeof(s));
  s.opc = opc::kIdentify;
  s.nsid = nsid;
  s.cdw10 = cns_value;
  return s;
}

std::string field(const char* p, size_t n) {
  std::string s = get_field(p, n);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

}  // namespace

Status AdminClient::fail(const char* what, const HostQpair::Reply& r) const {
  if (r.transport != Errc::kOk) {
    return Status(r.transport, fmt::format("{}:{}: {}: {}", params_.host, params_.port, what, errc_describe(r.transport)));
  }
  return Status(errc_from_status(r.status()),
                fmt::format("{}:{}: {}: {}", params_.host, params_.port, what, describe_status(r.status())));
}

Task<Result<std::unique_ptr<AdminClient>>> AdminClient::Open(const HostParams& p) {
  auto qp = co_await HostQpair::Connect(p, 0, 32, 0xFFFF);
  if (!qp.ok()) co_return qp.status();
  std::unique_ptr<AdminClient> c(new AdminClient(p, std::move(*qp)));
  HostQpair& a = *c->qp_;
  const uint64_t tmo = p.admin_timeout_ns;
  auto cap = co_await a.command(property_cmd(fctype::kPropertyGet, prop::kCap, 0, true), {}, 0, tmo);
  if (!cap.ok()) co_return c->fail("Property Get CAP", cap);
  const uint64_t capv = uint64_t(uint32_t(cap.cqe.dw0)) | (uint64_t(uint32_t(cap.cqe.dw1)) << 32);
  // CAP.TO is the worst case for CSTS.RDY to follow CC.EN, in 500 ms units.
  const uint64_t ready_ns = std::max<uint64_t>(((capv >> 24) & 0xff) * 500'000'000ull, 1'000'000'000ull);
  auto en = co_await a.command(property_cmd(fctype::kPropertySet, prop::kCc, kCcEn | (6u << 16) | (4u << 20), false), {},
                               0, tmo);
  if (!en.ok()) co_return c->fail("Property Set CC.EN", en);
  const uint64_t start = now_ns();
  for (;;) {
    auto st = co_await a.command(property_cmd(fctype::kPropertyGet, prop::kCsts, 0, false), {}, 0, tmo);
    if (!st.ok()) co_return c->fail("Property Get CSTS", st);
    const uint32_t csts = st.cqe.dw0;
    if (csts & kCstsCfs) co_return Status::Errorf(Errc::kIo, "{}:{}: controller fatal status after enable", p.host, p.port);
    if (csts & kCstsRdy) break;
    if (now_ns() - start > ready_ns) {
      co_return Status::Errorf(Errc::kTimedOut, "{}:{}: controller not ready within CAP.TO", p.host, p.port);
    }
    co_await Reactor::sleep_for(1'000'000);
  }
  co_return std::move(c);
}

Task<Result<std::vector<uint8_t>>> AdminClient::run(const char* what, Sqe sqe, std::vector<uint8_t> out, uint32_t in_len) {
  auto r = co_await qp_->command(sqe, std::move(out), in_len, params_.admin_timeout_ns);
  if (!r.ok()) co_return fail(what, r);
  co_return std::move(r.data);
}

Task<Result<IdentifyController>> AdminClient::identify_controller() {
  auto d = co_await run("Identify Controller", identify_cmd(cns::kController, 0), {}, 4096);
  if (!d.ok()) co_return d.status();
  IdentifyController id;
  std::memcpy(&id, d->data(), std::min(d->size(), sizeof(id)));
  co_return id;
}

Task<Result<IdentifyNamespace>> AdminClient::identify_namespace(uint32_t nsid) {
  auto d = co_await run("Identify Namespace", identify_cmd(cns::kNamespace, nsid), {}, 4096);
  if (!d.ok()) co_return d.status();
  IdentifyNamespace id;
  std::memcpy(&id, d->data(), std::min(d->size(), sizeof(id)));
  co_return id;
}

Task<Result<std::vector<uint32_t>>> AdminClient::active_namespaces() {
  // The list holds up to 1024 ids greater than the given one; page through until a short page.
  std::vector<uint32_t> out;
  uint32_t after = 0;
  for (;;) {
    auto d = co_await run("Identify Active Namespace List", identify_cmd(cns::kActiveNamespaceList, after), {}, 4096);
    if (!d.ok()) co_return d.status();
    size_t n = 0;
    for (; n < 1024; ++n) {
      uint32_t id;
      std::memcpy(&id, d->data() + n * 4, 4);
      if (id == 0) break;
      out.push_back(id);
    }
    if (n < 1024) break;
    after = out.back();
  }
  co_return out;
}

Task<Result<std::vector<NsDescriptor>>> AdminClient::namespace_descriptors(uint32_t nsid) {
  auto d = co_await run("Identify Namespace Identification Descriptors", identify_cmd(cns::kNamespaceIdDescriptors, nsid), {},
                        4096);
  if (!d.ok()) co_return d.status();
  std::vector<NsDescriptor> out;
  size_t off = 0;
  while (off + 4 <= d->size()) {
    const uint8_t type = (*d)[off], len = (*d)[off + 1];
    if (type == 0 || len == 0 || off + 4 + len > d->size()) break;
    out.push_back({type, std::vector<uint8_t>(d->begin() + long(off + 4), d->begin() + long(off + 4 + len))});
    off += 4 + len;
  }
  co_return out;
}

Task<Result<std::vector<uint8_t>>> AdminClient::get_log(uint8_t log_id, uint32_t len, uint64_t offset, uint32_t nsid) {
  if (len == 0 || len % 4 != 0) co_return Status::Errorf(Errc::kInval, "log length {} is not a positive multiple of 4", len);
  const uint32_t numd = len / 4 - 1;  // 0's based dwords
  Sqe s;
  std::memset(&s, 0, sizeof(s));
  s.opc = opc::kGetLogPage;
  s.nsid = nsid;
  s.cdw10 = uint32_t(log_id) | ((numd & 0xFFFF) << 16);
  s.cdw11 = numd >> 16;
  s.cdw12 = uint32_t(offset);
  s.cdw13 = uint32_t(offset >> 32);
  auto what = fmt::format("Get Log Page {:#x}", log_id);
  co_return co_await run(what.c_str(), s, {}, len);
}

Task<Result<DiscoveryLog>> AdminClient::discovery_log() {
  // Read the header, then the entries, then the header again: if the generation counter moved, the
  // entries may be torn, so start over (bounded).
  for (int attempt = 0; attempt < 8; ++attempt) {
    auto h = co_await get_log(lid::kDiscovery, sizeof(DiscoveryLogHeader));
    if (!h.ok()) co_return h.status();
    DiscoveryLogHeader hdr;
    std::memcpy(&hdr, h->data(), sizeof(hdr));
    const uint64_t numrec = hdr.numrec;
    if (numrec > 4096) co_return Status::Errorf(Errc::kProto, "discovery log claims {} records", numrec);
    DiscoveryLog out;
    out.genctr = hdr.genctr;
    if (numrec > 0) {
      auto e = co_await get_log(lid::kDiscovery, uint32_t(numrec * sizeof(DiscoveryLogEntry)), sizeof(DiscoveryLogHeader));
      if (!e.ok()) co_return e.status();
      for (uint64_t i = 0; i < numrec; ++i) {
        DiscoveryLogEntry ent;
        std::memcpy(&ent, e->data() + i * sizeof(ent), sizeof(ent));
        DiscoveryRecord r;
        r.trtype = ent.trtype;
        r.adrfam = ent.adrfam;
        r.subtype = ent.subtype;
        r.treq = ent.treq;
        r.portid = ent.portid;
        r.cntlid = ent.cntlid;
        r.asqsz = ent.asqsz;
        r.eflags = ent.eflags;
        r.trsvcid = field(ent.trsvcid, sizeof(ent.trsvcid));
        r.traddr = field(ent.traddr, sizeof(ent.traddr));
        r.subnqn = field(ent.subnqn, sizeof(ent.subnqn));
        r.sectype = ent.tsas[0];
        out.records.push_back(std::move(r));
      }
    }
    auto again = co_await get_log(lid::kDiscovery, 16);
    if (!again.ok()) co_return again.status();
    uint64_t gen2;
    std::memcpy(&gen2, again->data(), 8);
    if (gen2 == out.genctr) co_return out;
  }
  co_return Status::Errorf(Errc::kAgain, "{}:{}: the discovery log kept changing while being read", params_.host, params_.port);
}

Task<void> AdminClient::close() {
  if (!qp_) co_return;
  bool closed = false;
  qp_->close(Errc::kConnReset, [&closed] { closed = true; });
  while (!closed) co_await Reactor::sleep_for(100'000);
  qp_.reset();
}

const char* trtype_name(uint8_t t) {
  switch (t) {
    case 1: return "rdma";
    case 2: return "fc";
    case 3: return "tcp";
    case 254: return "loop";
    default: return "unrecognized";
  }
}
const char* adrfam_name(uint8_t a) {
  switch (a) {
    case 1: return "ipv4";
    case 2: return "ipv6";
    case 3: return "infiniband";
    case 4: return "fibre-channel";
    case 254: return "intra-host";
    default: return "unrecognized";
  }
}
const char* subtype_name(uint8_t s) {
  switch (s) {
    case 1: return "discovery subsystem referral";
    case 2: return "nvme subsystem";
    case 3: return "current discovery subsystem";
    default: return "unrecognized";
  }
}
const char* treq_name(uint8_t t) {
  const bool sqflow = t & kTreqSqFlowDisable;
  switch (t & 3) {
    case 0: return sqflow ? "not specified, sq flow control disable supported" : "not specified";
    case 1: return sqflow ? "required, sq flow control disable supported" : "required";
    case 2: return sqflow ? "not required, sq flow control disable supported" : "not required";
    default: return "reserved";
  }
}

}  // namespace tern::nvmf
