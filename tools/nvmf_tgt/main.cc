// nvmf_tgt: a standalone NVMe/TCP target from a YAML file, with a JSON-lines control socket for changes
// at run time (ANA states, namespaces, hosts, fault injection), and optionally an NBD server (src/nbd)
// sharing devices over NBD. It serves tests and benchmarks until the io-engine daemon exposes the same
// operations over gRPC.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <iostream>
#include <thread>

#include "bdev/fault_bdevs.h"
#include "bdev/registry.h"
#include "common/log.h"
#include "config.h"
#include "nbd/server.h"
#include "nvmf/target/target.h"
#include "reactor/reactor_set.h"

using namespace tern;
using json = nlohmann::json;

namespace {

json subsystems_json(nvmf::Target& t) {
  json out = json::array();
  for (auto& s : t.list_subsystems()) {
    json j = {{"nqn", s.nqn}, {"serial", s.serial}, {"model", s.model}, {"allow_any_host", s.allow_any_host},
              {"hosts", s.hosts}};
    for (auto& l : s.listeners) j["listeners"].push_back(l.to_string());
    for (auto& n : s.namespaces) {
      j["namespaces"].push_back({{"nsid", n.nsid}, {"device", n.bdev}, {"uuid", n.uuid}, {"ana_group", n.anagrpid},
                                 {"size", n.size_bytes}, {"block_size", n.block_size}});
    }
    for (auto& c : s.controllers) {
      j["controllers"].push_back(
          {{"cntlid", c.cntlid}, {"hostnqn", c.hostnqn}, {"hostid", c.hostid}, {"io_queues", c.io_queues}, {"kato_ms", c.kato_ms},
           {"listener", c.listener.to_string()}, {"io_commands", c.io_commands}, {"read_bytes", c.read_bytes},
           {"write_bytes", c.write_bytes}});
    }
    for (auto& [l, g, st] : s.ana) {
      j["ana"].push_back({{"listener", l.to_string()}, {"group", g}, {"state", nvmf::ana_state_name(st)}});
    }
    out.push_back(j);
  }
  return out;
}

json nbd_json(nbd::Server& s) {
  json out = json::array();
  for (auto& e : s.list_exports()) {
    json clients = json::array();
    for (auto& c : e.clients) clients.push_back({{"id", c.id}, {"peer", c.peer}, {"reactor", c.reactor}});
    const nbd::ExportCounters& k = e.counters;
    out.push_back({{"name", e.name}, {"device", e.bdev}, {"read_only", e.read_only}, {"size", e.size_bytes},
                   {"block_size", e.block_size}, {"clients", clients},
                   {"counters", {{"reads", k.reads}, {"writes", k.writes}, {"flushes", k.flushes}, {"trims", k.trims},
                                 {"write_zeroes", k.write_zeroes}, {"read_bytes", k.read_bytes},
                                 {"write_bytes", k.write_bytes}, {"errors", k.errors}}}});
  }
  return out;
}

std::string nbd_listen(const tgt::NbdSpec& spec, const nbd::Server& s) {
  if (spec.listen.empty()) return "";
  auto a = tgt::parse_listen_addr(spec.listen);
  return nvmf::ListenAddr{a->host, s.tcp_port()}.to_string();
}

// Runs one control command on the primary reactor.
Task<json> control(nvmf::Target& t, BdevRegistry& reg, nbd::Server* nbds, const tgt::NbdSpec* nbd_spec, json req) {
  auto fail = [](const Status& s) { return json{{"ok", false}, {"error", s.ToString()}}; };
  auto str = [&](const char* k) { return req.value(k, std::string()); };
  const std::string op = str("op");
  if (op == "list") co_return json{{"ok", true}, {"subsystems", subsystems_json(t)}};
  if (op.rfind("nbd_", 0) == 0) {
    if (!nbds) co_return fail(Status(Errc::kNotSup, "no NBD server: the configuration has no 'nbd' section"));
    if (op == "nbd_list") {
      co_return json{{"ok", true}, {"exports", nbd_json(*nbds)}, {"listen", nbd_listen(*nbd_spec, *nbds)},
                     {"unix", nbds->unix_path()}};
    }
    if (op == "nbd_export_add") {
      std::string name = str("name").empty() ? str("device") : str("name");
      Status s = nbds->add_export(name, str("device"), req.value("read_only", false));
      co_return s.ok() ? json{{"ok", true}, {"name", name}} : fail(s);
    }
    if (op == "nbd_export_remove") {
      Status s = co_await nbds->remove_export(str("name"));
      co_return s.ok() ? json{{"ok", true}} : fail(s);
    }
  }
  if (op == "ana_set") {
    auto l = tgt::parse_listen_addr(str("listener"));
    if (!l.ok()) co_return fail(l.status());
    auto st = nvmf::parse_ana_state(str("state"));
    if (!st.ok()) co_return fail(st.status());
    Status s = t.set_ana_state(str("nqn"), *l, req.value("group", 1u), *st);
    co_return s.ok() ? json{{"ok", true}} : fail(s);
  }
  if (op == "ns_add") {
    auto id = t.add_namespace(str("nqn"), str("device"), req.value("nsid", 0u), req.value("ana_group", 0u));
    if (!id.ok()) co_return fail(id.status());
    co_return json{{"ok", true}, {"nsid", *id}};
  }
  if (op == "ns_remove") {
    Status s = co_await t.remove_namespace(str("nqn"), req.value("nsid", 0u));
    co_return s.ok() ? json{{"ok", true}} : fail(s);
  }
  if (op == "ns_rescan") {
    auto size = t.rescan_namespace(str("nqn"), req.value("nsid", 0u));
    if (!size.ok()) co_return fail(size.status());
    co_return json{{"ok", true}, {"size", *size}};
  }
  if (op == "host_add" || op == "host_remove") {
    Status s = op == "host_add" ? t.add_host(str("nqn"), str("host")) : t.remove_host(str("nqn"), str("host"));
    co_return s.ok() ? json{{"ok", true}} : fail(s);
  }
  if (op == "device_create") {
    auto b = co_await reg.create(str("uri"));
    if (!b.ok()) co_return fail(b.status());
    co_return json{{"ok", true}, {"name", (*b)->name()}};
  }
  if (op == "error_rules") {
    auto* e = dynamic_cast<ErrorBdev*>(reg.find(str("device")));
    if (!e) co_return fail(Status::Errorf(Errc::kNoDev, "no error device '{}'", str("device")));
    std::vector<ErrorRule> rules;
    for (auto& r : req.value("rules", json::array())) {
      auto p = ErrorRule::Parse(r.get<std::string>());
      if (!p.ok()) co_return fail(p.status());
      rules.push_back(*p);
    }
    e->set_rules(rules);
    co_return json{{"ok", true}};
  }
  if (op == "delay_set") {
    auto* d = dynamic_cast<DelayBdev*>(reg.find(str("device")));
    if (!d) co_return fail(Status::Errorf(Errc::kNoDev, "no delay device '{}'", str("device")));
    d->set_config({req.value("read_us", 0ull) * 1000, req.value("write_us", 0ull) * 1000,
                   req.value("other_us", 0ull) * 1000, req.value("jitter_us", 0ull) * 1000});
    co_return json{{"ok", true}};
  }
  if (op == "subsystem_create") {
    nvmf::SubsystemConfig cfg;
    cfg.nqn = str("nqn");
    cfg.serial = str("serial");
    if (req.contains("model")) cfg.model = str("model");
    cfg.allow_any_host = req.value("allow_any_host", false);
    cfg.hosts = req.value("hosts", std::vector<std::string>{});
    cfg.cntlid_min = req.value("cntlid_min", uint16_t(1));
    cfg.cntlid_max = req.value("cntlid_max", uint16_t(0xFFEF));
    cfg.ana_reporting = req.value("ana_reporting", true);
    auto sub = t.create_subsystem(cfg);
    if (!sub.ok()) co_return fail(sub.status());
    co_return json{{"ok", true}, {"nqn", (*sub)->nqn()}, {"serial", (*sub)->config().serial}};
  }
  if (op == "subsystem_delete") {
    Status s = co_await t.delete_subsystem(str("nqn"));
    co_return s.ok() ? json{{"ok", true}} : fail(s);
  }
  if (op == "allow_any_host") {
    Status s = t.set_allow_any_host(str("nqn"), req.value("allow", false));
    co_return s.ok() ? json{{"ok", true}} : fail(s);
  }
  if (op == "listen") {
    auto a = tgt::parse_listen_addr(str("listener"));
    if (!a.ok()) co_return fail(a.status());
    auto port = t.listen(a->host, a->port);
    if (!port.ok()) co_return fail(port.status());
    co_return json{{"ok", true}, {"listener", nvmf::ListenAddr{a->host, *port}.to_string()}};
  }
  if (op == "stop_listening") {
    auto a = tgt::parse_listen_addr(str("listener"));
    if (!a.ok()) co_return fail(a.status());
    Status s = co_await t.stop_listening(a->host, a->port);
    co_return s.ok() ? json{{"ok", true}} : fail(s);
  }
  if (op == "listener_add" || op == "listener_remove") {
    auto a = tgt::parse_listen_addr(str("listener"));
    if (!a.ok()) co_return fail(a.status());
    Status s = op == "listener_add" ? t.add_subsystem_listener(str("nqn"), *a) : t.remove_subsystem_listener(str("nqn"), *a);
    co_return s.ok() ? json{{"ok", true}} : fail(s);
  }
  if (op == "listeners") {
    json out = json::array();
    for (auto& l : t.listeners()) out.push_back(l.to_string());
    co_return json{{"ok", true}, {"listeners", out}};
  }
  if (op == "stats") {
    json out = json::object();
    for (Bdev* b : reg.list()) {
      BdevStats s = co_await b->stats(t.reactors());
      out[b->name()] = {{"reads", s.of(IoType::kRead).ops},      {"writes", s.of(IoType::kWrite).ops},
                        {"read_bytes", s.of(IoType::kRead).bytes}, {"write_bytes", s.of(IoType::kWrite).bytes},
                        {"flushes", s.of(IoType::kFlush).ops},   {"unmaps", s.of(IoType::kUnmap).ops},
                        {"write_zeroes", s.of(IoType::kWriteZeroes).ops}, {"errors", s.of(IoType::kRead).errors + s.of(IoType::kWrite).errors},
                        {"fua_writes", s.of(IoType::kWrite).fua + s.of(IoType::kWriteZeroes).fua}};
    }
    nvmf::TargetStats ts = co_await t.stats();
    json now = json::object(), entered = json::object();
    for (size_t i = 0; i < nvmf::TcpReq::kStateCount; ++i) {
      const char* name = nvmf::TcpReq::state_name(nvmf::TcpReq::State(i));
      now[name] = ts.in_state[i];
      entered[name] = ts.entered[i];
    }
    json target = {{"qpairs", ts.qpairs}, {"commands", ts.commands}, {"requests", now}, {"entered", entered}};
    co_return json{{"ok", true}, {"devices", out}, {"target", target}};
  }
  co_return fail(Status::Errorf(Errc::kInval, "unknown op '{}'", op));
}

struct Services {
  nvmf::Target* target;
  BdevRegistry* reg;
  nbd::Server* nbd;  // null without an `nbd:` section
  const tgt::NbdSpec* nbd_spec;
};

void control_loop(int lfd, ReactorSet* set, Services sv, std::atomic<bool>* stop) {
  while (!stop->load()) {
    int c = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    std::string buf;
    char tmp[4096];
    for (;;) {
      ssize_t n = read(c, tmp, sizeof(tmp));
      if (n <= 0) break;
      buf.append(tmp, size_t(n));
      size_t nl;
      while ((nl = buf.find('\n')) != std::string::npos) {
        std::string line = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        json resp;
        try {
          json req = json::parse(line);
          resp = set->run_sync(0, [&]() -> Task<json> {
            co_return co_await control(*sv.target, *sv.reg, sv.nbd, sv.nbd_spec, req);
          });
        } catch (const std::exception& e) {
          resp = {{"ok", false}, {"error", std::string("bad request: ") + e.what()}};
        }
        std::string out = resp.dump() + "\n";
        if (write(c, out.data(), out.size()) < 0) break;
      }
    }
    close(c);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nvmf_tgt: run tern's NVMe/TCP target from a YAML configuration (devices, listeners, subsystems, "
               "hosts, namespaces, ANA states). Prints one JSON line when ready: {\"ready\": true, \"listeners\": [...]}. "
               "SIGINT/SIGTERM shut it down cleanly."};
  std::string config_path, control_path, cores, log_level, poll = "adaptive";
  uint64_t idle_spin_us = 20;
  app.add_option("-c,--config", config_path, "YAML configuration file")->required();
  app.add_option("--control", control_path, "Unix socket for JSON-lines control commands: list, listeners, subsystem_create, "
                                            "subsystem_delete, listen, stop_listening, listener_add, listener_remove, allow_any_host, "
                                            "host_add, host_remove, ns_add, ns_remove, ns_rescan, ana_set, device_create, error_rules, delay_set, "
                                            "stats, nbd_export_add, nbd_export_remove, nbd_list (docs/operations.md)");
  app.add_option("--cores", cores, "Reactor cores (overrides the file)");
  app.add_option("--log-level", log_level, "Log levels (overrides the file)");
  app.add_option("--poll", poll, "Reactor polling: adaptive (sleep when idle) or busy (always spin)")
      ->check(CLI::IsMember({"adaptive", "busy"}))
      ->capture_default_str();
  app.add_option("--idle-spin-us", idle_spin_us, "Adaptive polling: idle time before a reactor sleeps")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto cfg = tgt::load_config(config_path);
  if (!cfg.ok()) {
    fmt::print(stderr, "nvmf_tgt: {}\n", cfg.status().message());
    return 2;
  }
  if (!cores.empty()) cfg->cores = cores;
  if (!log_level.empty()) cfg->log_level = log_level;
  if (Status s = log::set_levels(cfg->log_level); !s.ok()) {
    fmt::print(stderr, "nvmf_tgt: {}\n", s.message());
    return 2;
  }
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto core_list = parse_core_list(cfg->cores);
  if (!core_list.ok()) {
    fmt::print(stderr, "nvmf_tgt: {}\n", core_list.status().message());
    return 2;
  }
  ReactorSetOptions ro;
  ro.cores = *core_list;
  ro.reactor.poll_mode = poll == "busy" ? PollMode::kBusy : PollMode::kAdaptive;
  ro.reactor.idle_spin_ns = idle_spin_us * 1000;
  auto set = ReactorSet::Start(ro);
  if (!set.ok()) {
    fmt::print(stderr, "nvmf_tgt: {}\n", set.status().message());
    return 2;
  }
  ReactorSet& rs = **set;
  BdevRegistry reg(rs);
  nvmf::Target target(rs, reg, cfg->options);
  std::unique_ptr<nbd::Server> nbds;

  std::vector<std::string> actual;
  Status setup = rs.run_sync(0, [&]() -> Task<Status> {
    for (auto& u : cfg->devices) {
      auto b = co_await reg.create(u);
      if (!b.ok()) co_return b.status();
    }
    std::vector<nvmf::ListenAddr> ls;
    for (auto& l : cfg->listeners) {
      auto a = tgt::parse_listen_addr(l);
      if (!a.ok()) co_return a.status();
      auto port = target.listen(a->host, a->port);
      if (!port.ok()) co_return port.status();
      ls.push_back({a->host, *port});
      actual.push_back(ls.back().to_string());
    }
    auto resolve = [&](const std::string& s) -> Result<nvmf::ListenAddr> {
      if (!s.empty() && s[0] == '@') {
        size_t i = std::stoul(s.substr(1));
        if (i >= ls.size()) return Status::Errorf(Errc::kInval, "listener '{}' does not exist", s);
        return ls[i];
      }
      return tgt::parse_listen_addr(s);
    };
    for (auto& sp : cfg->subsystems) {
      auto s = target.create_subsystem(sp.cfg);
      if (!s.ok()) co_return s.status();
      for (auto& l : sp.listeners) {
        auto a = resolve(l);
        if (!a.ok()) co_return a.status();
        if (Status st = target.add_subsystem_listener(sp.cfg.nqn, *a); !st.ok()) co_return st;
      }
      for (auto& ns : sp.namespaces) {
        auto id = target.add_namespace(sp.cfg.nqn, ns.device, ns.nsid, ns.ana_group);
        if (!id.ok()) co_return id.status();
      }
      for (auto& a : sp.ana) {
        auto l = resolve(a.listener);
        if (!l.ok()) co_return l.status();
        auto st = nvmf::parse_ana_state(a.state);
        if (!st.ok()) co_return st.status();
        if (Status x = target.set_ana_state(sp.cfg.nqn, *l, a.group, *st); !x.ok()) co_return x;
      }
    }
    if (cfg->nbd.enabled) {
      nbd::ServerOptions o;
      if (!cfg->nbd.listen.empty()) {
        auto a = tgt::parse_listen_addr(cfg->nbd.listen);
        o.tcp = true;
        o.tcp_host = a->host;
        o.tcp_port = a->port;
      }
      o.unix_path = cfg->nbd.unix_path;
      o.max_inflight = cfg->nbd.max_inflight;
      o.drain_timeout_ms = cfg->nbd.drain_timeout_ms;
      auto s = nbd::Server::Create(rs, reg, o);
      if (!s.ok()) co_return s.status();
      nbds = std::move(*s);
      for (auto& e : cfg->nbd.exports) {
        if (Status x = nbds->add_export(e.name, e.device, e.read_only); !x.ok()) co_return x;
      }
    }
    co_return Status::Ok();
  });

  int lfd = -1;
  std::atomic<bool> stop{false};
  std::thread ctl;
  if (setup.ok() && !control_path.empty()) {
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    unlink(control_path.c_str());
    std::snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", control_path.c_str());
    if (bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 || listen(lfd, 8) != 0) {
      setup = Status::FromErrno(errno, fmt::format("control socket {}: {}", control_path, std::strerror(errno)));
    } else {
      ctl = std::thread(control_loop, lfd, &rs, Services{&target, &reg, nbds.get(), &cfg->nbd}, &stop);
    }
  }
  int rc = 0;
  if (!setup.ok()) {
    fmt::print(stderr, "nvmf_tgt: {}\n", setup.message().empty() ? setup.ToString() : std::string(setup.message()));
    rc = 2;
  } else {
    json ready{{"ready", true}, {"listeners", actual}, {"pid", getpid()}};
    if (nbds) ready["nbd"] = {{"listen", nbd_listen(cfg->nbd, *nbds)}, {"unix", nbds->unix_path()}};
    std::cout << ready.dump() << std::endl;
    int sig = 0;
    sigwait(&sigs, &sig);
    TLOG_INFO("nvmf", "signal {}: shutting down", sig);
  }
  if (ctl.joinable()) {
    stop = true;
    shutdown(lfd, SHUT_RDWR);
    close(lfd);
    ctl.join();
    unlink(control_path.c_str());
  }
  rs.run_sync(0, [&]() -> Task<void> {
    if (nbds) co_await nbds->stop();
    co_await target.shutdown();
    co_await reg.destroy_all();
  });
  nbds.reset();
  rs.stop();
  return rc;
}
