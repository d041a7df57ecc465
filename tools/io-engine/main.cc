// io-engine: the storage-node daemon (docs/operations.md, "Running an io-engine"; design in
// docs/design/engine.md).
//
// Threads: main (flags, start-up, waits for SIGTERM/SIGINT, orderly shutdown), the reactors (all I/O and
// the engine's state, on reactor 0), gRPC's threads (handlers that hand work to reactor 0), the metrics
// server's thread.
#include <signal.h>

#include <chrono>
#include <cstdio>

#include "common/log.h"
#include "engine/api/grpc_server.h"
#include "engine/api/registration.h"
#include "engine/engine.h"
#include "engine/metrics.h"
#include "flags.h"
#include "metrics/http_server.h"
#include "reactor/reactor_set.h"

using namespace tern;
using namespace tern::engine;

int main(int argc, char** argv) {
  auto t0 = std::chrono::steady_clock::now();
  int exit_code = -1;
  auto opts = parse_flags(argc, argv, &exit_code);
  if (!opts.ok()) return exit_code >= 0 ? exit_code : 2;
  if (Status s = log::set_levels(opts->log_level); !s.ok()) {
    fmt::print(stderr, "io-engine: --log-level: {}\n", s.message());
    return 2;
  }
  log::set_format(opts->log_format == "json" ? log::Format::kJson : log::Format::kText);

  // Every thread started from here on inherits the blocked signals; main collects them with sigwait.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto cores = parse_core_list(opts->cores);
  if (!cores.ok()) {
    fmt::print(stderr, "io-engine: --cores: {}\n", cores.status().message());
    return 2;
  }
  ReactorSetOptions ro;
  ro.cores = *cores;
  ro.reactor.poll_mode = opts->poll == "busy" ? PollMode::kBusy : PollMode::kAdaptive;
  ro.reactor.idle_spin_ns = opts->idle_spin_us * 1000;
  ro.reactor.await_spin_ns = opts->await_spin_us * 1000;
  auto set = ReactorSet::Start(ro);
  if (!set.ok()) {
    fmt::print(stderr, "io-engine: starting reactors: {}\n", set.status().message());
    return 1;
  }
  ReactorSet& rs = **set;
  int rc = 0;
  {
    Engine engine(rs, *opts);
    Status s = rs.run_sync(0, [&] { return engine.start(); });
    std::unique_ptr<GrpcServer> grpc;
    if (s.ok()) {
      auto g = GrpcServer::Start(engine, opts->grpc_endpoint);
      if (g.ok()) {
        grpc = std::move(*g);
      } else {
        s = g.status();
      }
    }
    std::unique_ptr<metrics::MetricsHttpServer> metrics_server;
    if (s.ok() && opts->metrics_port != 0) {
      // Runs on the metrics thread; the page is built on the primary reactor.
      auto m = metrics::MetricsHttpServer::Start(opts->metrics_address, opts->metrics_port, [&]() -> Result<std::string> {
        return rs.run_sync(0, [&] { return metrics_page(engine); });
      });
      if (m.ok()) {
        metrics_server = std::move(*m);
      } else {
        s = Status::Errorf(m.code(), "metrics endpoint {}:{}: {}", opts->metrics_address, opts->metrics_port,
                           m.status().message());
      }
    }
    if (!s.ok()) {
      fmt::print(stderr, "io-engine: {}\n", s.message());
      rc = 1;
    } else {
      auto ms = uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count());
      rs.run_sync(0, [&] { engine.set_startup_ms(ms); });
      auto info = rs.run_sync(0, [&] { return engine.node_info(); });
      auto pools = rs.run_sync(0, [&] { return engine.pools().list_pools(""); });
      TLOG_INFO("engine", "io-engine {} on node '{}' ready in {} ms: gRPC on port {}, NVMe/TCP {}:{} (advertised {}), "
                "metrics {}, {} pool(s), reactors on cores {}",
                info.version, info.node_name, ms, grpc->port(), opts->nvmf_address, engine.options().nvmf_port,
                info.nvmf_endpoint,
                metrics_server ? fmt::format("http://{}:{}/metrics", opts->metrics_address, metrics_server->port()) : "off",
                pools.size(), opts->cores);
      // With --agent: announce this node to the control plane and heartbeat (deregistered first at stop).
      std::unique_ptr<Registration> registration;
      if (!opts->agents.empty()) {
        RegistrationInfo ri;
        ri.node = info.node_name;
        std::string host = opts->grpc_endpoint.substr(0, opts->grpc_endpoint.rfind(':'));
        if (host == "0.0.0.0" || host == "[::]" || host == "::" || host.empty()) host = opts->advertise_address;
        ri.grpc_endpoint = fmt::format("{}:{}", host, grpc->port());
        ri.nvmf_endpoint = info.nvmf_endpoint;
        ri.instance_uuid = info.instance.ToString();
        ri.version = info.version;
        for (const std::string& l : opts->node_labels) ri.labels[l.substr(0, l.find('='))] = l.substr(l.find('=') + 1);
        auto r = Registration::Start(opts->agents, std::move(ri));
        if (r.ok()) registration = std::move(*r);
      }
      int sig = 0;
      sigwait(&sigs, &sig);
      TLOG_INFO("engine", "{}: stopping (new requests refused, shares drained, pools exported)", strsignal(sig));
      if (registration) registration->Stop();
      if (metrics_server) metrics_server->Stop();
      grpc->Stop(5000);
    }
    if (metrics_server) metrics_server->Stop();
    if (grpc) grpc->Stop(0);
    rs.run_sync(0, [&] { return engine.shutdown(); });
  }
  rs.stop();
  if (rc == 0) TLOG_INFO("engine", "stopped cleanly");
  return rc;
}
