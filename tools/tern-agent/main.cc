// tern-agent: the core agent of tern's control plane (docs/operations.md, "Running the control plane";
// design in docs/design/control-plane.md).
//
// Threads: main (flags, start-up, waits for SIGTERM/SIGINT, orderly shutdown); one reactor (the agent's
// state, the etcd client, the engines' calls completing); gRPC's threads (engine registrations); the REST
// server's threads (one per connection). Everything but main enters the reactor with run_sync.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>

#include "common/log.h"
#include "common/strings.h"
#include "control/agent.h"
#include "control/http_server.h"
#include "control/registration_service.h"
#include "control/rest_api.h"
#include "agent_pools.h"
#include "kube/diskpool_operator.h"
#include "reactor/reactor_set.h"
#include "store/etcd_client.h"

using namespace tern;
using namespace tern::control;

namespace {

constexpr const char* kFooter = R"(
Examples:
  # one agent against a local etcd, REST on :8081, engines register on :50051
  tern-agent --etcd 127.0.0.1:2379

  # a standby beside it (takes over within --lease-ttl when the first dies, at once when it stops)
  tern-agent --etcd 10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379 --name agent-b --rest-port 8082 \
      --grpc-endpoint 0.0.0.0:50052

  # engines join with: io-engine --agent <agent host>:50051 [--agent <standby>:50052] ...
  # then: curl -s localhost:8081/v1/nodes ; ternctl get nodes

  # in a Kubernetes pod (the chart does this): pools from the DiskPool objects of the pod's namespace,
  # with the pod's service account
  tern-agent --etcd ... --diskpools

Every flag can also be set by its environment variable (TERN_AGENT_<FLAG>). SIGTERM or SIGINT: the agent
resigns (a standby takes over at once) and exits 0. API: docs/api/rest-v1.openapi.json (also served at
/v1/openapi.json).)";

std::string hostname() {
  char buf[256] = {};
  gethostname(buf, sizeof(buf) - 1);
  return buf[0] ? buf : "agent";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tern-agent: the core agent of tern's control plane. It keeps the cluster's specs in etcd, "
               "registers io-engines, places and creates volumes, and reconciles the cluster with its specs. "
               "Several may run: one leads, the others stand by."};
  app.footer(kFooter);
  app.get_formatter()->column_width(34);
  auto env = [](const char* n) { return std::string("TERN_AGENT_") + n; };
  std::string etcd = "127.0.0.1:2379", prefix = "/tern/v1", name = hostname(), grpc_ep = "0.0.0.0:50051";
  std::string rest_address = "0.0.0.0", advertise, log_level = "info", log_format = "text";
  uint16_t rest_port = 8081;
  AgentOptions o;
  int64_t ttl = 3;
  unsigned commitment = 250;
  app.add_option("--etcd", etcd, "etcd members, host:port, comma-separated")->envname(env("ETCD"))->capture_default_str();
  app.add_option("--prefix", prefix, "Key prefix of this cluster in etcd")->envname(env("PREFIX"))->capture_default_str();
  app.add_option("--name", name, "This agent's name (default: the host name)")->envname(env("NAME"));
  app.add_option("--grpc-endpoint", grpc_ep, "Where engines register (host:port)")->envname(env("GRPC_ENDPOINT"))->capture_default_str();
  app.add_option("--rest-address", rest_address, "Address of the REST API")->envname(env("REST_ADDRESS"))->capture_default_str();
  app.add_option("--rest-port", rest_port, "Port of the REST API (0: a free one)")->envname(env("REST_PORT"))->capture_default_str();
  HttpServerOptions http_opts;
  app.add_option("--tls-cert", http_opts.tls_cert_file,
                 "PEM certificate (chain) for the REST API: with --tls-key it serves HTTPS only (TLS 1.2+)")
      ->envname(env("TLS_CERT"))->check(CLI::ExistingFile);
  app.add_option("--tls-key", http_opts.tls_key_file, "PEM private key of --tls-cert")->envname(env("TLS_KEY"))->check(CLI::ExistingFile);
  app.add_option("--advertise", advertise, "host:port of this agent's REST API as others should reach it (default: "
                                           "--rest-address:port, 127.0.0.1 for 0.0.0.0)")->envname(env("ADVERTISE"));
  app.add_option("--lease-ttl", ttl, "Seconds a dead leader keeps the role (2..60)")->envname(env("LEASE_TTL"))
      ->check(CLI::Range(2, 60))->capture_default_str();
  app.add_option("--node-deadline-ms", o.node_deadline_ms, "An engine silent this long is probed, then offline")
      ->envname(env("NODE_DEADLINE_MS"))->check(CLI::Range(500, 600000))->capture_default_str();
  app.add_option("--heartbeat-ms", o.heartbeat_ms, "How often engines are asked to heartbeat")
      ->envname(env("HEARTBEAT_MS"))->check(CLI::Range(100, 60000))->capture_default_str();
  app.add_option("--poll-ms", o.poll_ms, "How often the engines' pools are read")->envname(env("POLL_MS"))
      ->check(CLI::Range(100, 600000))->capture_default_str();
  app.add_option("--reconcile-ms", o.reconcile_ms, "The periodic reconcile pass")->envname(env("RECONCILE_MS"))
      ->check(CLI::Range(100, 600000))->capture_default_str();
  app.add_option("--engine-timeout-ms", o.engine_timeout_ms, "Each call to an engine")->envname(env("ENGINE_TIMEOUT_MS"))
      ->check(CLI::Range(100, 3600000))->capture_default_str();
  app.add_option("--thin-commitment", commitment, "Thin replicas may commit this % of a pool's capacity")
      ->envname(env("THIN_COMMITMENT"))->check(CLI::Range(100, 10000))->capture_default_str();
  app.add_option("--faulted-child-wait-ms", o.faulted_child_wait_ms,
                 "A faulted replica whose node stays away this long is replaced elsewhere (until then the agent "
                 "waits for it to return and rebuild only what it missed)")
      ->envname(env("FAULTED_CHILD_WAIT_MS"))->capture_default_str();
  app.add_option("--max-rebuilds", o.max_rebuilds,
                 "At most this many rebuilds the agent starts (replicas onlined, joined or replaced) run at once in "
                 "the cluster; others wait for a slot (0: no limit)")
      ->envname(env("MAX_REBUILDS"))->check(CLI::Range(0, 10000))->capture_default_str();
  app.add_option("--orphan-grace-ms", o.orphan_grace_ms,
                 "A replica, clone or snapshot in a declared pool that no spec names (and is named by a UUID, as the "
                 "agent names them) is destroyed after it has been seen so for this long")
      ->envname(env("ORPHAN_GRACE_MS"))->check(CLI::Range(1000, 86400000))->capture_default_str();
  app.add_option("--child-params", o.child_params,
                 "Options appended to a nexus's remote child URIs (how long a child may stall or be away before "
                 "the nexus goes on without it)")
      ->envname(env("CHILD_PARAMS"))->capture_default_str();
  app.add_option("--log-level", log_level, "Log level, or per module: info,control=debug")->envname(env("LOG_LEVEL"))->capture_default_str();
  app.add_option("--log-format", log_format, "Log format")->envname(env("LOG_FORMAT"))->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  bool diskpools = false;
  kube::KubeConfig kc;
  kube::OperatorOptions ko;
  app.add_flag("--diskpools", diskpools,
               "Create and destroy pools as the DiskPool objects (tern.io/v1alpha1) of a Kubernetes namespace say, "
               "and keep their status (the leader does)")
      ->envname(env("DISKPOOLS"));
  app.add_option("--kube-api", kc.api, "The Kubernetes API server (default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)")
      ->envname(env("KUBE_API"));
  app.add_option("--kube-namespace", kc.ns, "The DiskPools' namespace (default: the pod's)")->envname(env("KUBE_NAMESPACE"));
  app.add_option("--kube-token-file", kc.token_file, "Bearer token file, read for every request (default: the service account's)")
      ->envname(env("KUBE_TOKEN_FILE"));
  app.add_option("--kube-ca-file", kc.ca_file, "The API server's CA (default: the service account's ca.crt)")
      ->envname(env("KUBE_CA_FILE"));
  app.add_option("--diskpool-resync-s", ko.resync_s, "Every DiskPool is listed again this often (status refreshed, failures retried)")
      ->envname(env("DISKPOOL_RESYNC_S"))->check(CLI::Range(1.0, 3600.0))->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (Status s = log::set_levels(log_level); !s.ok()) {
    fmt::print(stderr, "tern-agent: --log-level: {}\n", s.message());
    return 2;
  }
  log::set_format(log_format == "json" ? log::Format::kJson : log::Format::kText);
  if (Status s = check_name("agent", name); !s.ok()) {
    fmt::print(stderr, "tern-agent: --name: {}\n", s.message());
    return 2;
  }
  if (prefix.empty() || prefix.front() != '/' || prefix.back() == '/') {
    fmt::print(stderr, "tern-agent: --prefix '{}': a key path like /tern/v1 (starts with '/', no trailing '/')\n", prefix);
    return 2;
  }
  if (diskpools) {
    if (Status s = kc.complete_in_cluster(); !s.ok()) {
      fmt::print(stderr, "tern-agent: --diskpools: {}\n", s.message());
      return 2;
    }
  }
  o.keys.prefix = prefix;
  o.lease_ttl_s = ttl;
  o.thin_commitment = commitment / 100.0;

  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  ReactorSetOptions ro;
  auto cores = parse_core_list(allowed_cores_string());
  ro.cores = {cores.ok() && !cores->empty() ? cores->front() : 0};
  ro.pin = false;  // the agent is light; it must not claim an engine's core
  auto set = ReactorSet::Start(ro);
  if (!set.ok()) {
    fmt::print(stderr, "tern-agent: starting the reactor: {}\n", set.status().message());
    return 1;
  }
  ReactorSet& rs = **set;
  int rc = 0;
  {
    store::EtcdOptions eo;
    eo.endpoints = split_commas(etcd);
    auto client = rs.run_sync(0, [&] { return store::EtcdClient::Create(eo); });
    if (!client.ok()) {
      fmt::print(stderr, "tern-agent: --etcd: {}\n", client.status().message());
      rs.stop();
      return 2;
    }
    std::unique_ptr<store::EtcdClient> etcd_client = std::move(*client);
    std::unique_ptr<Agent> agent;
    std::unique_ptr<RestApi> rest;
    std::atomic<RestApi*> rest_ready{nullptr};  // set once the agent exists; requests before get 503
    std::unique_ptr<HttpServer> http;
    std::unique_ptr<RegistrationServer> grpc;
    std::unique_ptr<kube::KubeClient> kube_client;
    std::unique_ptr<AgentPools> agent_pools;
    std::unique_ptr<kube::DiskPoolOperator> diskpool_operator;
    // The REST port first: the agent's id carries the address clients should use.
    auto h = HttpServer::Start(rest_address, rest_port, [&rest_ready](const HttpCall& c) {
      RestApi* api = rest_ready.load();
      return api ? api->handle(c) : problem_reply(Status(Errc::kConnRefused, "the agent is starting"));
    }, http_opts);
    if (!h.ok()) {
      fmt::print(stderr, "tern-agent: REST {}:{}: {}\n", rest_address, rest_port, h.status().message());
      rc = 1;
    } else {
      http = std::move(*h);
      if (advertise.empty()) {
        advertise = fmt::format("{}:{}", rest_address == "0.0.0.0" || rest_address.empty() ? "127.0.0.1" : rest_address, http->port());
      }
      std::string id = fmt::format("{}@{}", name, advertise);
      rs.run_sync(0, [&] { agent = std::make_unique<Agent>(*etcd_client, id, o); });
      rest = std::make_unique<RestApi>(rs, *agent);
      rest_ready.store(rest.get());
      auto g = RegistrationServer::Start(rs, *agent, grpc_ep);
      if (!g.ok()) {
        fmt::print(stderr, "tern-agent: --grpc-endpoint: {}\n", g.status().message());
        rc = 1;
      } else {
        grpc = std::move(*g);
        rs.run_sync(0, [&] { agent->start(); });
        TLOG_INFO("control", "tern-agent {} started: REST http://{}/v1, registrations on port {}, etcd {} (prefix {})", id,
                  advertise, grpc->port(), etcd, prefix);
        if (diskpools) {
          ko.instance = name;
          kc.user_agent = "tern-agent/" + name;
          kube_client = std::make_unique<kube::KubeClient>(kc);
          agent_pools = std::make_unique<AgentPools>(rs, *agent);
          diskpool_operator = std::make_unique<kube::DiskPoolOperator>(*kube_client, *agent_pools, ko);
          diskpool_operator->start();
        }
        int sig = 0;
        sigwait(&sigs, &sig);
        TLOG_INFO("control", "{}: stopping (resigning the lead)", strsignal(sig));
        if (diskpool_operator) diskpool_operator->request_stop();
      }
    }
    // Resign first (a standby takes over at once), then stop taking requests, then the etcd client.
    if (agent) rs.run_sync(0, [&] { return agent->stop(); });
    diskpool_operator.reset();  // after the resign: a request in flight does not delay it
    agent_pools.reset();
    if (http) http->Stop();
    if (grpc) grpc->Stop();
    rs.run_sync(0, [&] { return etcd_client->close(); });
    rs.run_sync(0, [&] { agent.reset(); etcd_client.reset(); });
  }
  rs.stop();
  if (rc == 0) TLOG_INFO("control", "stopped cleanly");
  return rc;
}
