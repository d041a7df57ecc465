// ternctl: tern's command-line tool.
//   ternctl pool|replica|snapshot|clone|bdev|nvmf|stats|node|test|nexus ...   the io-engine's API (gRPC)
//   ternctl nvme ...                  an NVMe/TCP host: discover, identify, list-subsystems on any target
//   ternctl offline pool ...          tools that work on a pool's disk directly while no engine has it
//   ternctl get|describe|volume|cluster ..., node cordon|uncordon   the control plane (the agent's REST API)
#include <CLI/CLI.hpp>
#include <csignal>
#include <functional>

#include "common/log.h"
#include "cluster_cmds.h"
#include "engine_cmds.h"
#include "nvme_cmds.h"
#include "pool_cmds.h"

int main(int argc, char** argv) {
  CLI::App app{"ternctl: command-line tool for tern, a replicated block-storage system."};
  app.footer(R"(
Examples:
  ternctl pool create p0 uring:///var/lib/tern/p0.img
  ternctl replica create r1 --pool p0 --size 10GiB --thin --share nvmf
  ternctl replica list -o json
  ternctl nexus create <volume uuid> --size 10GiB --child 'bdev:///<replica uuid>?uuid=<replica uuid>' \
      --child 'nvmf://10.0.0.2:8420/nqn.2026-11.io.tern:<uuid>?uuid=<uuid>'
  ternctl nexus publish <volume uuid> --host nqn.2014-08.org.nvmexpress:uuid:<host>
  ternctl nvme discover --addr 127.0.0.1 --port 8420
  ternctl offline pool check uring:///dev/sdb
  ternctl cluster pool add p-node1 --node node1 --disk uring:///dev/sdb
  ternctl volume create --size 10GiB --replicas 3 --thin
  ternctl get volumes ; ternctl describe volume <uuid>

Engine commands talk to the io-engine at --engine (default 127.0.0.1:10124, or TERN_ENGINE); cluster
commands (get, describe, volume, cluster, node cordon) to the core agent at --agent (default
http://127.0.0.1:8081, or TERN_AGENT).
Exit codes: 0 done, 1 failed, 2 bad command line, 3 not found, 4 exists with other arguments,
5 refused in the current state (busy/shared/open), 6 out of space, 7 engine unreachable or
unavailable, 8 data loss, 9 invalid argument. Run 'ternctl <command> --help' for more.)");
  app.require_subcommand(1);
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "Log levels, e.g. warn or info,nvmf=debug")->capture_default_str();

  std::function<int()> run_engine;
  tern::ctl::add_engine_commands(app, &run_engine);
  tern::ctl::add_cluster_commands(app, &run_engine);
  tern::ctl::NvmeArgs nvme;
  int (*run)(const tern::ctl::NvmeArgs&) = nullptr;
  tern::ctl::add_nvme_commands(app, nvme, &run);
  auto* offline = app.add_subcommand("offline", "Tools that work on a device directly while no engine uses it");
  offline->require_subcommand(1);
  tern::ctl::PoolArgs pool;
  int (*run_pool)(const tern::ctl::PoolArgs&) = nullptr;
  tern::ctl::add_pool_commands(*offline, pool, &run_pool);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every command-line mistake is exit code 2 (CLI11 has its own numbers).
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (tern::Status s = tern::log::set_levels(log_level); !s.ok()) {
    fmt::print(stderr, "ternctl: {}\n", s.message());
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  if (run_engine) return run_engine();
  if (run_pool) return run_pool(pool);
  return run ? run(nvme) : 2;
}
