// The standalone target's configuration file (YAML) and its control-socket commands (JSON lines).
// Both end up as calls on the same Target/BdevRegistry API the engine will expose over gRPC.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "nvmf/target/target.h"

namespace tern::tgt {

struct NamespaceSpec {
  std::string device;
  uint32_t nsid = 0;
  uint32_t ana_group = 0;
};
struct AnaSpec {
  std::string listener;  // "host:port" or "@N"
  uint32_t group = 1;
  std::string state;
};
struct SubsystemSpec {
  nvmf::SubsystemConfig cfg;
  std::vector<std::string> listeners;  // "host:port" or "@N" (the Nth global listener)
  std::vector<NamespaceSpec> namespaces;
  std::vector<AnaSpec> ana;
};
struct TargetConfig {
  std::string cores = "0";
  std::string log_level = "info";
  std::vector<std::string> devices;
  std::vector<std::string> listeners;  // "host:port"; port 0 picks a free one
  std::vector<SubsystemSpec> subsystems;
  nvmf::TargetOptions options;
};

Result<TargetConfig> load_config(const std::string& path);
Result<nvmf::ListenAddr> parse_listen_addr(const std::string& s);

}  // namespace tern::tgt
