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
// The optional NBD server (src/nbd): where it listens and what it exports.
struct NbdExportSpec {
  std::string name;
  std::string device;
  bool read_only = false;
};
struct NbdSpec {
  bool enabled = false;      // an `nbd:` section is present
  std::string listen;        // "host:port" (port 0 picks a free one); empty = no TCP listener
  std::string unix_path;     // empty = no unix socket
  uint32_t max_inflight = 128;
  uint64_t drain_timeout_ms = 10'000;
  std::vector<NbdExportSpec> exports;
};

struct TargetConfig {
  std::string cores = "0";
  std::string log_level = "info";
  std::vector<std::string> devices;
  std::vector<std::string> listeners;  // "host:port"; port 0 picks a free one
  std::vector<SubsystemSpec> subsystems;
  nvmf::TargetOptions options;
  NbdSpec nbd;
};

Result<TargetConfig> load_config(const std::string& path);
Result<nvmf::ListenAddr> parse_listen_addr(const std::string& s);

}  // namespace tern::tgt
