// ternctl: tern's command-line tool. Today: `ternctl nvme` (discover, identify, list-subsystems against
// any NVMe/TCP target) and `ternctl pool` (offline create and check). The control plane's commands
// (volumes, nodes) join it later.
#include <CLI/CLI.hpp>
#include <csignal>

#include "common/log.h"
#include "nvme_cmds.h"
#include "pool_cmds.h"

int main(int argc, char** argv) {
  CLI::App app{"ternctl: command-line tool for tern, a replicated block-storage system.\n"
               "Run 'ternctl nvme --help' for the NVMe/TCP client commands, 'ternctl pool --help' for the offline "
               "pool tools."};
  app.require_subcommand(1);
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "Log levels, e.g. warn or info,nvmf=debug")->capture_default_str();
  tern::ctl::NvmeArgs nvme;
  int (*run)(const tern::ctl::NvmeArgs&) = nullptr;
  tern::ctl::add_nvme_commands(app, nvme, &run);
  tern::ctl::PoolArgs pool;
  int (*run_pool)(const tern::ctl::PoolArgs&) = nullptr;
  tern::ctl::add_pool_commands(app, pool, &run_pool);
  CLI11_PARSE(app, argc, argv);
  if (tern::Status s = tern::log::set_levels(log_level); !s.ok()) {
    fmt::print(stderr, "ternctl: {}\n", s.message());
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  if (run_pool) return run_pool(pool);
  return run ? run(nvme) : 2;
}
