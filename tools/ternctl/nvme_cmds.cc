#include "nvme_cmds.h"

#include <sched.h>

#include <charconv>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>

#include "common/units.h"
#include "common/uuid.h"
#include "nvmf/host/admin_client.h"
#include "nvmf/host/nvmf_bdev.h"
#include "nvmf/target/target.h"
#include "reactor/reactor_set.h"

namespace tern::ctl {

using json = nlohmann::ordered_json;
using namespace nvmf;
using namespace nvme;

namespace {

std::string trimmed(const char* p, size_t n) {
  std::string s = get_field(p, n);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

std::string hex(const uint8_t* p, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += fmt::format("{:02x}", p[i]);
  return s;
}

std::string version_string(uint32_t v) {
  return fmt::format("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff);
}

Result<HostParams> host_params(const NvmeArgs& a, const std::string& subnqn) {
  HostParams p;
  p.host = a.traddr;
  p.port = a.trsvcid;
  p.subnqn = subnqn;
  p.hostnqn = a.hostnqn.empty() ? default_host_nqn() : a.hostnqn;
  if (!a.hostid.empty()) {
    auto u = Uuid::Parse(a.hostid);
    if (!u.ok()) return Status::Errorf(Errc::kInval, "--hostid: {}", u.status().message());
    p.hostid = u->bytes();
  } else {
    p.hostid = host_id_for(p.hostnqn);
  }
  p.hdgst = a.hdgst;
  p.ddgst = a.ddgst;
  p.connect_timeout_ns = uint64_t(a.timeout_ms) * 1'000'000;
  p.admin_timeout_ns = uint64_t(a.timeout_ms) * 1'000'000;
  return p;
}

// Runs `body(client)` on a one-reactor set with an admin queue to `subnqn`; returns the exit code.
template <typename Body>
int with_reactor(Body body) {
  ReactorSetOptions ro;
  ro.cores = {sched_getcpu()};
  ro.pin = false;
  ro.reactor.idle_spin_ns = 0;  // a CLI waits on the network; no reason to spin
  ro.reactor.await_spin_ns = 0;
  auto set = ReactorSet::Start(ro);
  if (!set.ok()) {
    fmt::print(stderr, "ternctl: {}\n", set.status().message());
    return 1;
  }
  Status st = (*set)->run_sync(0, [&body]() -> Task<Status> { co_return co_await body(); });
  (*set)->stop();
  if (!st.ok()) {
    fmt::print(stderr, "ternctl: {}\n", st.message().empty() ? st.ToString() : std::string(st.message()));
    return 1;
  }
  return 0;
}

// --- discover ---

json record_json(const DiscoveryRecord& r) {
  return {{"trtype", trtype_name(r.trtype)},   {"adrfam", adrfam_name(r.adrfam)}, {"subtype", subtype_name(r.subtype)},
          {"treq", treq_name(r.treq)},         {"portid", r.portid},              {"trsvcid", r.trsvcid},
          {"subnqn", r.subnqn},                {"traddr", r.traddr},              {"cntlid", r.cntlid},
          {"asqsz", r.asqsz},                  {"eflags", r.eflags},
          {"sectype", r.sectype == 0 ? "none" : fmt::format("{}", r.sectype)}};
}

Task<Status> discover_body(const NvmeArgs* a) {
  auto hp = host_params(*a, kDiscoveryNqn);
  if (!hp.ok()) co_return hp.status();
  auto c = co_await AdminClient::Open(*hp);
  if (!c.ok()) co_return c.status();
  auto log = co_await (*c)->discovery_log();
  co_await (*c)->close();
  if (!log.ok()) co_return log.status();
  if (a->output == "json") {
    json recs = json::array();
    for (auto& r : log->records) recs.push_back(record_json(r));
    fmt::print("{}\n", json{{"genctr", log->genctr}, {"records", recs}}.dump(2));
    co_return Status::Ok();
  }
  fmt::print("\nDiscovery Log Number of Records {}, Generation counter {}\n", log->records.size(), log->genctr);
  for (size_t i = 0; i < log->records.size(); ++i) {
    const auto& r = log->records[i];
    fmt::print("=====Discovery Log Entry {}======\n", i);
    fmt::print("trtype:  {}\nadrfam:  {}\nsubtype: {}\ntreq:    {}\nportid:  {}\ntrsvcid: {}\nsubnqn:  {}\ntraddr:  {}\n",
               trtype_name(r.trtype), adrfam_name(r.adrfam), subtype_name(r.subtype), treq_name(r.treq), r.portid,
               r.trsvcid, r.subnqn, r.traddr);
    fmt::print("sectype: {}\n", r.sectype == 0 ? "none" : fmt::format("{}", r.sectype));
  }
  co_return Status::Ok();
}

// --- identify ---

json controller_json(const IdentifyController& id) {
  return {{"vid", uint16_t(id.vid)},
          {"ssvid", uint16_t(id.ssvid)},
          {"sn", trimmed(id.sn, sizeof(id.sn))},
          {"mn", trimmed(id.mn, sizeof(id.mn))},
          {"fr", trimmed(id.fr, sizeof(id.fr))},
          {"rab", id.rab},
          {"ieee", hex(id.ieee, 3)},
          {"cmic", id.cmic},
          {"mdts", id.mdts},
          {"cntlid", uint16_t(id.cntlid)},
          {"ver", uint32_t(id.ver)},
          {"oaes", uint32_t(id.oaes)},
          {"ctratt", uint32_t(id.ctratt)},
          {"cntrltype", id.cntrltype},
          {"oacs", uint16_t(id.oacs)},
          {"acl", id.acl},
          {"aerl", id.aerl},
          {"frmw", id.frmw},
          {"lpa", id.lpa},
          {"elpe", id.elpe},
          {"kas", uint16_t(id.kas)},
          {"anatt", id.anatt},
          {"anacap", id.anacap},
          {"anagrpmax", uint32_t(id.anagrpmax)},
          {"nanagrpid", uint32_t(id.nanagrpid)},
          {"sqes", id.sqes},
          {"cqes", id.cqes},
          {"maxcmd", uint16_t(id.maxcmd)},
          {"nn", uint32_t(id.nn)},
          {"oncs", uint16_t(id.oncs)},
          {"fuses", uint16_t(id.fuses)},
          {"fna", id.fna},
          {"vwc", id.vwc},
          {"awun", uint16_t(id.awun)},
          {"awupf", uint16_t(id.awupf)},
          {"acwu", uint16_t(id.acwu)},
          {"sgls", uint32_t(id.sgls)},
          {"mnan", uint32_t(id.mnan)},
          {"subnqn", trimmed(id.subnqn, sizeof(id.subnqn))},
          {"ioccsz", uint32_t(id.ioccsz)},
          {"iorcsz", uint32_t(id.iorcsz)},
          {"icdoff", uint16_t(id.icdoff)},
          {"fcatt", id.fcatt},
          {"msdbd", id.msdbd},
          {"ofcs", uint16_t(id.ofcs)}};
}

json namespace_json(const IdentifyNamespace& id, const std::vector<NsDescriptor>& descs) {
  json lbafs = json::array();
  for (unsigned i = 0; i <= id.nlbaf && i < 64; ++i) {
    lbafs.push_back({{"ms", uint16_t(id.lbaf[i].ms)}, {"ds", id.lbaf[i].lbads}, {"rp", id.lbaf[i].rp}});
  }
  json j = {{"nsze", uint64_t(id.nsze)},   {"ncap", uint64_t(id.ncap)},     {"nuse", uint64_t(id.nuse)},
            {"nsfeat", id.nsfeat},         {"nlbaf", id.nlbaf},             {"flbas", id.flbas},
            {"mc", id.mc},                 {"dpc", id.dpc},                 {"dps", id.dps},
            {"nmic", id.nmic},             {"rescap", id.rescap},           {"dlfeat", id.dlfeat},
            {"nawun", uint16_t(id.nawun)}, {"nawupf", uint16_t(id.nawupf)}, {"noiob", uint16_t(id.noiob)},
            {"anagrpid", uint32_t(id.anagrpid)},
            {"nsattr", id.nsattr},         {"nguid", hex(id.nguid, 16)},    {"eui64", hex(id.eui64, 8)},
            {"lbafs", lbafs}};
  for (auto& d : descs) {
    if (d.type == 3 && d.value.size() == 16) {
      std::array<uint8_t, 16> b;
      std::memcpy(b.data(), d.value.data(), 16);
      j["uuid"] = Uuid(b).ToString();
    }
  }
  return j;
}

void print_fields(const json& j) {
  for (auto& [k, v] : j.items()) {
    if (v.is_array() || v.is_object()) continue;
    if (v.is_string()) fmt::print("{:<10}: {}\n", k, v.get<std::string>());
    else if (k == "ver") fmt::print("{:<10}: {:#x} ({})\n", k, v.get<uint32_t>(), version_string(v.get<uint32_t>()));
    else if (v.is_number_unsigned() && v.get<uint64_t>() > 9) fmt::print("{:<10}: {:#x}\n", k, v.get<uint64_t>());
    else fmt::print("{:<10}: {}\n", k, v.dump());
  }
}

Task<Status> identify_body(const NvmeArgs* a) {
  auto hp = host_params(*a, a->subnqn);
  if (!hp.ok()) co_return hp.status();
  auto c = co_await AdminClient::Open(*hp);
  if (!c.ok()) co_return c.status();
  AdminClient& cl = **c;
  json out;
  Status st;
  if (a->nsid == 0) {
    auto id = co_await cl.identify_controller();
    if (id.ok()) out = controller_json(*id);
    else st = id.status();
  } else {
    auto id = co_await cl.identify_namespace(a->nsid);
    if (id.ok() && uint64_t(id->nsze) == 0) {
      st = Status::Errorf(Errc::kNoEnt, "{}:{}: namespace {} of '{}' is not active", a->traddr, a->trsvcid, a->nsid,
                          a->subnqn);
    } else if (id.ok()) {
      auto descs = co_await cl.namespace_descriptors(a->nsid);
      out = namespace_json(*id, descs.ok() ? *descs : std::vector<NsDescriptor>{});
    } else {
      st = id.status();
    }
  }
  co_await cl.close();
  if (!st.ok()) co_return st;
  if (a->output == "json") {
    fmt::print("{}\n", out.dump(2));
    co_return Status::Ok();
  }
  if (a->nsid == 0) {
    fmt::print("NVME Identify Controller:\n");
    print_fields(out);
  } else {
    fmt::print("NVME Identify Namespace {}:\n", a->nsid);
    print_fields(out);
    const unsigned in_use = out["flbas"].get<unsigned>() & 0xf;
    unsigned i = 0;
    for (auto& l : out["lbafs"]) {
      fmt::print("lbaf {:>2} : ms:{:<3} lbads:{:<2} rp:{}{}\n", i, l["ms"].get<unsigned>(), l["ds"].get<unsigned>(),
                 l["rp"].get<unsigned>(), i == in_use ? " (in use)" : "");
      ++i;
    }
  }
  co_return Status::Ok();
}

// --- list-subsystems ---

const char* ana_name(uint8_t s) {
  switch (s & 0xf) {
    case 1: return "optimized";
    case 2: return "non-optimized";
    case 3: return "inaccessible";
    case 4: return "persistent-loss";
    case 0xf: return "change";
    default: return "unknown";
  }
}

// ANA state of each group as seen through this controller.
Task<std::map<uint32_t, uint8_t>> ana_states(AdminClient& c) {
  std::map<uint32_t, uint8_t> out;
  auto d = co_await c.get_log(lid::kAna, 4096);
  if (!d.ok() || d->size() < sizeof(AnaLogHeader)) co_return out;
  AnaLogHeader h;
  std::memcpy(&h, d->data(), sizeof(h));
  size_t off = sizeof(h);
  for (unsigned g = 0; g < h.ngrps && off + sizeof(AnaGroupDesc) <= d->size(); ++g) {
    AnaGroupDesc gd;
    std::memcpy(&gd, d->data() + off, sizeof(gd));
    out[gd.anagrpid] = gd.state;
    off += sizeof(gd) + size_t(uint32_t(gd.nnsids)) * 4;
  }
  co_return out;
}

Task<Status> list_body(const NvmeArgs* a) {
  auto hp = host_params(*a, kDiscoveryNqn);
  if (!hp.ok()) co_return hp.status();
  auto dc = co_await AdminClient::Open(*hp);
  if (!dc.ok()) co_return dc.status();
  auto log = co_await (*dc)->discovery_log();
  co_await (*dc)->close();
  if (!log.ok()) co_return log.status();

  // Group the NVM subsystem records by NQN: each record is a path.
  std::map<std::string, std::vector<DiscoveryRecord>> subsystems;
  for (auto& r : log->records) {
    if (r.subtype == kSubtypeNvme) subsystems[r.subnqn].push_back(r);
  }
  json out = json::array();
  size_t failed_paths = 0;
  for (auto& [nqn, paths] : subsystems) {
    json sj = {{"subnqn", nqn}, {"paths", json::array()}, {"namespaces", json::array()}};
    bool identified = false;
    for (auto& r : paths) {
      NvmeArgs pa = *a;
      // A wildcard listener is reached at the address the discovery controller was reached at.
      pa.traddr = (r.traddr.empty() || r.traddr == "0.0.0.0" || r.traddr == "::") ? a->traddr : r.traddr;
      unsigned port = 0;
      auto [end, ec] = std::from_chars(r.trsvcid.data(), r.trsvcid.data() + r.trsvcid.size(), port);
      if (ec != std::errc() || end != r.trsvcid.data() + r.trsvcid.size() || port == 0 || port > 65535) {
        sj["paths"].push_back({{"transport", trtype_name(r.trtype)}, {"traddr", pa.traddr}, {"trsvcid", r.trsvcid},
                               {"state", "unusable: bad trsvcid"}});
        ++failed_paths;
        continue;
      }
      pa.trsvcid = uint16_t(port);
      auto php = host_params(pa, nqn);
      json pj = {{"transport", trtype_name(r.trtype)}, {"traddr", pa.traddr}, {"trsvcid", r.trsvcid}};
      auto c = co_await AdminClient::Open(*php);
      if (!c.ok()) {
        pj["state"] = std::string("unreachable: ") + std::string(c.status().message());
        sj["paths"].push_back(pj);
        ++failed_paths;
        continue;
      }
      AdminClient& cl = **c;
      auto idc = co_await cl.identify_controller();
      if (idc.ok()) {
        pj["state"] = "live";
        pj["cntlid"] = uint16_t(idc->cntlid);
        std::map<uint32_t, uint8_t> ana;
        if (idc->anacap) ana = co_await ana_states(cl);
        if (!identified) {
          identified = true;
          sj["model"] = trimmed(idc->mn, sizeof(idc->mn));
          sj["serial"] = trimmed(idc->sn, sizeof(idc->sn));
          sj["firmware"] = trimmed(idc->fr, sizeof(idc->fr));
        }
        json states = json::object();
        auto nss = co_await cl.active_namespaces();
        for (uint32_t nsid : nss.ok() ? *nss : std::vector<uint32_t>{}) {
          auto idn = co_await cl.identify_namespace(nsid);
          if (!idn.ok()) continue;
          const uint32_t grp = idn->anagrpid;
          if (ana.count(grp)) states[std::to_string(nsid)] = ana_name(ana[grp]);
          bool known = false;
          for (auto& n : sj["namespaces"]) known |= n["nsid"] == nsid;
          if (known) continue;
          const uint32_t bs = 1u << idn->lbaf[idn->flbas & 0xf].lbads;
          json nj = {{"nsid", nsid}, {"blocks", uint64_t(idn->nsze)}, {"block_size", bs},
                     {"size_bytes", uint64_t(idn->nsze) * bs}, {"nguid", hex(idn->nguid, 16)}, {"ana_group", grp}};
          auto descs = co_await cl.namespace_descriptors(nsid);
          if (descs.ok()) {
            for (auto& d : *descs) {
              if (d.type == 3 && d.value.size() == 16) {
                std::array<uint8_t, 16> b;
                std::memcpy(b.data(), d.value.data(), 16);
                nj["uuid"] = Uuid(b).ToString();
              }
            }
          }
          sj["namespaces"].push_back(nj);
        }
        if (!states.empty()) pj["ana_state"] = states;
      } else {
        pj["state"] = std::string("error: ") + std::string(idc.status().message());
        ++failed_paths;
      }
      co_await cl.close();
      sj["paths"].push_back(pj);
    }
    out.push_back(sj);
  }

  if (a->output == "json") {
    fmt::print("{}\n", json{{"subsystems", out}}.dump(2));
  } else {
    if (out.empty()) fmt::print("no NVM subsystems visible to this host at {}:{}\n", a->traddr, a->trsvcid);
    for (auto& s : out) {
      fmt::print("{}\n", s["subnqn"].get<std::string>());
      if (s.contains("model")) {
        fmt::print("  model: {}  serial: {}  firmware: {}\n", s["model"].get<std::string>(),
                   s["serial"].get<std::string>(), s["firmware"].get<std::string>());
      }
      for (auto& p : s["paths"]) {
        std::string extra;
        if (p.contains("cntlid")) extra += fmt::format(" cntlid={}", p["cntlid"].get<unsigned>());
        if (p.contains("ana_state")) {
          for (auto& [ns, st] : p["ana_state"].items()) extra += fmt::format(" ns{}={}", ns, st.get<std::string>());
        }
        fmt::print("  +- {} traddr={} trsvcid={} {}{}\n", p["transport"].get<std::string>(), p["traddr"].get<std::string>(),
                   p["trsvcid"].get<std::string>(), p["state"].get<std::string>(), extra);
      }
      for (auto& n : s["namespaces"]) {
        fmt::print("  nsid {}: {} ({} x {} B) uuid {} ana group {}\n", n["nsid"].get<unsigned>(),
                   format_size(n["size_bytes"].get<uint64_t>()), n["blocks"].get<uint64_t>(),
                   n["block_size"].get<unsigned>(), n.value("uuid", std::string("-")), n["ana_group"].get<unsigned>());
      }
    }
  }
  if (failed_paths) {
    co_return Status::Errorf(Errc::kIo, "{} path(s) could not be used (see above)", failed_paths);
  }
  co_return Status::Ok();
}

int run_discover(const NvmeArgs& a) {
  return with_reactor([&a]() { return discover_body(&a); });
}
int run_identify(const NvmeArgs& a) {
  if (a.subnqn.empty()) {
    fmt::print(stderr, "ternctl: identify needs --nqn (the subsystem to connect to)\n");
    return 2;
  }
  return with_reactor([&a]() { return identify_body(&a); });
}
int run_list(const NvmeArgs& a) {
  return with_reactor([&a]() { return list_body(&a); });
}

void add_common(CLI::App* c, NvmeArgs& a) {
  c->add_option("-a,--traddr", a.traddr, "Target address (IPv4 or IPv6)")->capture_default_str();
  c->add_option("-s,--trsvcid", a.trsvcid, "Target port")->capture_default_str();
  c->add_option("-q,--hostnqn", a.hostnqn, "Host NQN (default: nqn.2019-05.io.openebs:node-name:<hostname>)");
  c->add_option("-I,--hostid", a.hostid, "Host identifier (UUID; default: derived from the host NQN)");
  c->add_flag("-g,--hdr-digest", a.hdgst, "Ask for header digests");
  c->add_flag("-G,--data-digest", a.ddgst, "Ask for data digests");
  c->add_option("-t,--timeout-ms", a.timeout_ms, "Connect and command timeout")->capture_default_str();
  c->add_option("-o,--output-format", a.output, "Output: normal or json")
      ->check(CLI::IsMember({"normal", "json"}))
      ->capture_default_str();
}

}  // namespace

void add_nvme_commands(CLI::App& app, NvmeArgs& a, int (**run)(const NvmeArgs&)) {
  CLI::App* nvme = app.add_subcommand("nvme", "NVMe over TCP client: discover, identify, list-subsystems (any target)");
  nvme->require_subcommand(1);
  auto* d = nvme->add_subcommand("discover", "Read a discovery controller's log: the subsystems and addresses this host may use");
  add_common(d, a);
  d->callback([run] { *run = run_discover; });

  auto* i = nvme->add_subcommand("identify", "Identify a controller, or with --namespace one of its namespaces");
  add_common(i, a);
  i->add_option("-n,--nqn", a.subnqn, "Subsystem NQN to connect to")->required();
  i->add_option("--namespace", a.nsid, "Namespace ID (default: identify the controller)");
  i->callback([run] { *run = run_identify; });

  auto* l = nvme->add_subcommand("list-subsystems",
                                 "Discover, then connect to every subsystem path: model, serial, namespaces and ANA states");
  add_common(l, a);
  l->callback([run] { *run = run_list; });
}

}  // namespace tern::ctl
