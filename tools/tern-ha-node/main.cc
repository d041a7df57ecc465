// tern-ha-node: the HA node agent beside the CSI node plugin. It keeps this host's NVMe/TCP paths to tern
// volumes pointed at their current targets (src/csi/ha_node.h), so a switch-over is a pause for the
// application, not an error.
//
// Threads: main only (a pass every --interval-ms; SIGTERM/SIGINT end it between passes).
#include <signal.h>
#include <time.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "common/log.h"
#include "common/strings.h"
#include "csi/agent.h"
#include "csi/ha_node.h"
#include "csi/host.h"

using namespace tern;
using namespace tern::csi;

namespace {

constexpr const char* kFooter = R"(
Example (a DaemonSet beside the CSI node plugin; privileged, host network, /dev and /etc/nvme shared):
  tern-ha-node --node-name "$NODE_NAME" \
      --agent-url http://tern-agent-0.tern-agent-hl:8081,http://tern-agent-1.tern-agent-hl:8081

What it does: a tern volume (a subsystem named nqn.2026-11.io.tern:<uuid>) whose paths on this host are all
down for --dead-after-ms is looked up at the agent; when the agent has republished the volume on another
node, this host connects to it (the kernel's native multipath, nvme_core.multipath=Y, moves the held I/O
to the new path) and then removes the paths to the dead node. Needs nvme-cli on PATH and the host NQN the
node plugin uses (/etc/nvme/hostnqn or --host-nqn). Every flag can also be set by its environment variable
(TERN_HA_NODE_<FLAG>). SIGTERM or SIGINT: it exits 0 after the pass in progress.)";

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tern-ha-node: keeps this host's NVMe/TCP paths to tern volumes on their current targets, so that "
               "a volume's switch-over to another node reaches applications as a pause, not an error."};
  app.footer(kFooter);
  app.get_formatter()->column_width(30);
  auto env = [](const char* n) { return std::string("TERN_HA_NODE_") + n; };
  std::string node_name, agents, agent_ca, log_level = "info", log_format = "text";
  WatcherOptions wo;
  AgentOptions ao;
  ao.timeout_s = 5;
  int interval_ms = 500;
  app.add_option("--node-name", node_name, "This node's name (for the logs; the Kubernetes node name)")
      ->required()->envname(env("NODE_NAME"));
  app.add_option("--agent-url", agents, "The core agents' REST API, every one: http(s)://host:port, comma-separated")
      ->required()->envname(env("AGENT_URL"));
  app.add_option("--agent-ca", agent_ca, "PEM CA bundle that signs the agents' certificates (https://)")
      ->envname(env("AGENT_CA"))->check(CLI::ExistingFile);
  app.add_option("--host-nqn", wo.host_nqn, "The host NQN new paths connect with (default: /etc/nvme/hostnqn's)")
      ->envname(env("HOST_NQN"));
  app.add_option("--interval-ms", interval_ms, "How often the paths are looked at")->envname(env("INTERVAL_MS"))
      ->check(CLI::Range(50, 60000))->capture_default_str();
  app.add_option("--dead-after-ms", wo.dead_after_ms, "A volume without a live path this long is looked up at the agent")
      ->envname(env("DEAD_AFTER_MS"))->check(CLI::Range(0, 600000))->capture_default_str();
  app.add_option("--recheck-ms", wo.recheck_ms, "A volume with live paths is looked up at the agent this often "
                                               "(a target moved while the old path stayed up)")
      ->envname(env("RECHECK_MS"))->check(CLI::Range(100, 3600000))->capture_default_str();
  app.add_option("--nqn-prefix", wo.nqn_prefix, "The engines' subsystem NQN prefix (the volume's UUID follows)")
      ->envname(env("NQN_PREFIX"))->capture_default_str();
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
    fmt::print(stderr, "tern-ha-node: --log-level: {}\n", s.message());
    return 2;
  }
  log::set_format(log_format == "json" ? log::Format::kJson : log::Format::kText);
  ao.urls = split_commas(agents);
  ao.ca_file = agent_ca;
  if (ao.urls.empty()) {
    fmt::print(stderr, "tern-ha-node: --agent-url names no agent\n");
    return 2;
  }
  if (wo.host_nqn.empty()) {
    auto nqn = read_host_nqn();
    if (!nqn.ok()) {
      fmt::print(stderr, "tern-ha-node: {}\n", nqn.status().message());
      return 2;
    }
    wo.host_nqn = *nqn;
  } else if (wo.host_nqn.rfind("nqn.", 0) != 0) {
    fmt::print(stderr, "tern-ha-node: --host-nqn '{}' is not an NQN\n", wo.host_nqn);
    return 2;
  }

  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  if (!native_multipath()) {
    TLOG_WARN("csi", "the kernel's native NVMe multipath is off (nvme_core.multipath=N): a new path to a volume "
                     "becomes another device, and a switch-over cannot keep the mounted one; boot with "
                     "nvme_core.multipath=Y");
  }
  Agent agent(ao);
  PathWatcher watcher(wo, agent);
  TLOG_INFO("csi", "tern-ha-node on {} ({}): watching the paths to {}* every {} ms, agents {}", node_name, wo.host_nqn,
            wo.nqn_prefix, interval_ms, agents);
  timespec ts{interval_ms / 1000, (interval_ms % 1000) * 1000000L};
  while (true) {
    watcher.pass();
    int sig = sigtimedwait(&sigs, nullptr, &ts);
    if (sig > 0) {
      TLOG_INFO("csi", "signal {}: stopping", sig);
      return 0;
    }
  }
}
