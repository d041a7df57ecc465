// ternctl: tern's command-line tool. Today: `ternctl nvme` (discover, identify, list-subsystems against
// any NVMe/TCP target). The control plane's commands (pools, volumes, nodes) join it later.
#include <CLI/CLI.hpp>
#include <csignal>

#include "common/log.h"
#include "nvme_cmds.h"

int main(int argc, char** argv) {
  CLI::App app{"ternctl: command-line tool for tern, a replicated block-storage system.\n"
               "Run 'ternctl nvme --help' for the NVMe/TCP client commands."};
  app.require_subcommand(1);
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "Log levels, e.g. warn or info,nvmf=debug")->capture_default_str();
  tern::ctl::NvmeArgs nvme;
  int (*run)(const tern::ctl::NvmeArgs&) = nullptr;
  tern::ctl::add_nvme_commands(app, nvme, &run);
  CLI11_PARSE(app, argc, argv);
  if (tern::Status s = tern::log::set_levels(log_level); !s.ok()) {
    fmt::print(stderr, "ternctl: {}\n", s.message());
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  return run ? run(nvme) : 2;
}
