// `ternctl nvme ...`: an NVMe/TCP client for humans in nvme-cli's spirit (discover, identify,
// list-subsystems) that works against any target, not only ours.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

namespace tern::ctl {

struct NvmeArgs {
  std::string traddr = "127.0.0.1";
  uint16_t trsvcid = 4420;
  std::string subnqn;
  std::string hostnqn;
  std::string hostid;
  bool hdgst = false;
  bool ddgst = false;
  uint32_t timeout_ms = 5000;
  uint32_t nsid = 0;        // identify: 0 = the controller
  std::string output = "normal";  // normal | json
};

// Adds the `nvme` command group to `app`; `run` is set to the chosen command.
void add_nvme_commands(CLI::App& app, NvmeArgs& args, int (**run)(const NvmeArgs&));

}  // namespace tern::ctl
