// tern-csi: tern's Container Storage Interface driver (io.tern.csi), the controller plugin or the node
// plugin (docs/kubernetes.md; design in src/csi/README.md).
//
// Threads: main (flags, start-up, waits for SIGTERM/SIGINT, orderly shutdown); gRPC's (the calls).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <grpcpp/grpcpp.h>

#include "common/log.h"
#include "common/strings.h"
#include "csi/agent.h"
#include "csi/controller.h"
#include "csi/host.h"
#include "csi/identity.h"
#include "csi/ids.h"
#include "csi/node.h"

using namespace tern;
using namespace tern::csi;

namespace {

constexpr const char* kFooter = R"(
Examples:
  # the controller plugin (beside csi-provisioner, csi-attacher, csi-resizer, csi-snapshotter)
  tern-csi --mode controller --csi-socket unix:///csi/csi.sock \
      --agent-url http://tern-agent-0.tern-agent-hl:8081,http://tern-agent-1.tern-agent-hl:8081

  # the node plugin on every node that mounts volumes (privileged, host network, kubelet's dir shared)
  tern-csi --mode node --csi-socket unix:///csi/csi.sock --node-name "$NODE_NAME" --agent-url ...

The node plugin needs nvme-cli (and the nvme-tcp kernel module), blkid, mkfs.ext4/mkfs.xfs, resize2fs,
xfs_growfs and mount on PATH, and the host's NQN in /etc/nvme/hostnqn (or --host-nqn). Its node ID is
"<node name>/<host NQN>": the controller lets only that host connect to a volume published for the node.
Every flag can also be set by its environment variable (TERN_CSI_<FLAG>; the socket also by CSI_ENDPOINT).
SIGTERM or SIGINT: calls in flight get 10 s to finish, then it exits 0.)";

// gRPC's listening address for --csi-socket: unix:///path (a stale socket file is removed first), or
// host:port (tcp://host:port) for tests and debugging.
Result<std::string> listen_address(const std::string& ep) {
  std::string path;
  if (ep.rfind("unix://", 0) == 0) {
    path = ep.substr(7);
  } else if (ep.rfind("unix:", 0) == 0) {
    path = ep.substr(5);
  } else if (ep.rfind("tcp://", 0) == 0) {
    return ep.substr(6);
  } else if (!ep.empty() && ep.front() == '/') {
    path = ep;
  } else {
    return ep;
  }
  if (path.empty() || path.front() != '/') return Status::Errorf(Errc::kInval, "'{}': a unix socket needs an absolute path", ep);
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return Status::Errorf(Errc::kExist, "'{}' exists and is not a socket", path);
    ::unlink(path.c_str());
  }
  return "unix://" + path;
}

std::string hostname() {
  char buf[256] = {};
  gethostname(buf, sizeof(buf) - 1);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tern-csi: tern's CSI driver (io.tern.csi). The controller plugin makes, publishes, grows and "
               "snapshots volumes through the core agent; the node plugin connects them over NVMe/TCP, makes "
               "their file systems and mounts them for pods."};
  app.footer(kFooter);
  app.get_formatter()->column_width(30);
  auto env = [](const char* n) { return std::string("TERN_CSI_") + n; };
  std::string mode, socket = "unix:///csi/csi.sock", agents, agent_ca, log_level = "info", log_format = "text";
  NodeOptions no;
  AgentOptions ao;
  if (const char* e = getenv("CSI_ENDPOINT")) socket = e;
  app.add_option("--mode", mode, "Which plugin to serve")->required()->envname(env("MODE"))
      ->check(CLI::IsMember({"controller", "node"}));
  app.add_option("--csi-socket", socket, "Where the CO's sidecars call: unix:///path (or host:port for tests)")
      ->envname(env("CSI_SOCKET"))->capture_default_str();
  app.add_option("--agent-url", agents,
                 "The core agents' REST API, every one: http(s)://host:port, comma-separated (a standby's 503 "
                 "moves on to the next). Required by the controller; the node asks it for a volume's health")
      ->envname(env("AGENT_URL"));
  app.add_option("--agent-ca", agent_ca, "PEM CA bundle that signs the agents' certificates (https://)")
      ->envname(env("AGENT_CA"))->check(CLI::ExistingFile);
  app.add_option("--agent-timeout-s", ao.timeout_s, "Each REST call to the agent")->envname(env("AGENT_TIMEOUT_S"))
      ->check(CLI::Range(1.0, 3600.0))->capture_default_str();
  app.add_option("--node-name", no.node_name, "The node plugin's node: the Kubernetes node name (spec.nodeName), "
                                              "the engine's --node-name on storage nodes (default: the host name)")
      ->envname(env("NODE_NAME"));
  app.add_option("--host-nqn", no.host_nqn, "The node's NVMe host NQN (default: /etc/nvme/hostnqn's)")
      ->envname(env("HOST_NQN"));
  app.add_option("--attach-timeout-s", no.attach_timeout_s,
                 "Node: how long a connect may take, and a namespace to appear after it")
      ->envname(env("ATTACH_TIMEOUT_S"))->check(CLI::Range(1, 3600))->capture_default_str();
  app.add_option("--log-level", log_level, "Log level, or per module: info,csi=debug")->envname(env("LOG_LEVEL"))
      ->capture_default_str();
  app.add_option("--log-format", log_format, "Log format")->envname(env("LOG_FORMAT"))
      ->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (Status s = log::set_levels(log_level); !s.ok()) {
    fmt::print(stderr, "tern-csi: --log-level: {}\n", s.message());
    return 2;
  }
  log::set_format(log_format == "json" ? log::Format::kJson : log::Format::kText);
  ao.urls = split_commas(agents);
  ao.ca_file = agent_ca;
  if (mode == "controller" && ao.urls.empty()) {
    fmt::print(stderr, "tern-csi: --agent-url is required in controller mode\n");
    return 2;
  }
  if (mode == "node") {
    if (no.node_name.empty()) no.node_name = hostname();
    if (no.node_name.empty() || no.node_name.find('/') != std::string::npos) {
      fmt::print(stderr, "tern-csi: --node-name '{}': a node name (no '/')\n", no.node_name);
      return 2;
    }
    if (no.host_nqn.empty()) {
      auto nqn = read_host_nqn();
      if (!nqn.ok()) {
        fmt::print(stderr, "tern-csi: {}\n", nqn.status().message());
        return 2;
      }
      no.host_nqn = *nqn;
    } else if (no.host_nqn.rfind("nqn.", 0) != 0) {
      fmt::print(stderr, "tern-csi: --host-nqn '{}' is not an NQN\n", no.host_nqn);
      return 2;
    }
  }
  auto addr = listen_address(socket);
  if (!addr.ok()) {
    fmt::print(stderr, "tern-csi: --csi-socket: {}\n", addr.status().message());
    return 2;
  }

  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  Agent agent(ao);
  // The node asks the agent only for a volume's health, in calls the kubelet repeats: a short limit.
  AgentOptions health_opts = ao;
  health_opts.timeout_s = std::min(ao.timeout_s, 5.0);
  Agent health_agent(health_opts);
  IdentityService identity;
  std::unique_ptr<ControllerService> controller;
  std::unique_ptr<NodeService> node;
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort(*addr, grpc::InsecureServerCredentials(), &port);
  b.RegisterService(&identity);
  if (mode == "controller") {
    controller = std::make_unique<ControllerService>(agent);
    b.RegisterService(controller.get());
  } else {
    node = std::make_unique<NodeService>(no, ao.urls.empty() ? nullptr : &health_agent);
    b.RegisterService(node.get());
  }
  std::unique_ptr<grpc::Server> server = b.BuildAndStart();
  if (!server) {
    fmt::print(stderr, "tern-csi: cannot serve on {}\n", *addr);
    return 1;
  }
  std::string where = addr->rfind("unix://", 0) == 0 ? *addr : fmt::format("{} (port {})", *addr, port);
  if (mode == "node" && !native_multipath()) {
    TLOG_WARN("csi", "the kernel's native NVMe multipath is off (nvme_core.multipath=N): volumes work, but a "
                     "switch-over to another node cannot keep them mounted; boot with nvme_core.multipath=Y");
  }
  if (mode == "node") {
    TLOG_INFO("csi", "tern-csi {} node plugin for {} ({}) serving on {}", TERN_VERSION_STRING, no.node_name, no.host_nqn, where);
  } else {
    TLOG_INFO("csi", "tern-csi {} controller plugin serving on {}, agents {}", TERN_VERSION_STRING, where, agents);
  }
  int sig = 0;
  sigwait(&sigs, &sig);
  TLOG_INFO("csi", "signal {}: stopping", sig);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return 0;
}
