#include "flags.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <yaml-cpp/yaml.h>

#include <iostream>
#include <set>

#include "common/log.h"
#include "reactor/reactor_set.h"

namespace tern::engine {

namespace {

constexpr const char* kExamples = R"(
Examples:
  # a node with one file-backed pool, gRPC on the default port, NVMe/TCP on 8420
  io-engine --node-name node-a --pool p0=uring:///var/lib/tern/p0.img

  # everything from a file, the gRPC port overridden by the environment
  TERN_GRPC_ENDPOINT=127.0.0.1:10125 io-engine --config /etc/tern/io-engine.yaml

  # then, from any shell on the node:
  ternctl pool list
  ternctl replica create r1 --pool p0 --size 1GiB --thin --share nvmf

Every flag can also be set by its environment variable (shown as Env:) or as a key of the
--config YAML file (the flag's name without dashes in front: `nvmf-port: 8420`; pools as a list:
`pools: [{name: p0, disk: "uring:///dev/sdb"}]`). A flag beats its variable, which beats the file.
On SIGTERM or SIGINT the engine stops taking requests, unshares (hosts' I/O drains), exports its pools
cleanly and exits 0. Docs: docs/operations.md ("Running an io-engine").)";

std::string first_ipv4() {
  ifaddrs* ifs = nullptr;
  std::string out;
  if (getifaddrs(&ifs) != 0) return "127.0.0.1";
  for (ifaddrs* i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    if ((i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP)) continue;
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof(buf));
    out = buf;
    break;
  }
  freeifaddrs(ifs);
  return out.empty() ? "127.0.0.1" : out;
}

std::string hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || !buf[0]) return "localhost";
  return buf;
}

// "name=uri" -> PoolSpec.
Result<PoolSpec> parse_pool(const std::string& s) {
  size_t eq = s.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == s.size()) {
    return Status::Errorf(Errc::kInval, "--pool '{}': expected NAME=DISK_URI, e.g. p0=uring:///dev/sdb", s);
  }
  return PoolSpec{s.substr(0, eq), s.substr(eq + 1)};
}

// Scans argv and the environment for the config file before the real parse (its values become the
// options' defaults).
std::string find_config_path(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if ((a == "-c" || a == "--config") && i + 1 < argc) return argv[i + 1];
    if (a.rfind("--config=", 0) == 0) return a.substr(9);
  }
  const char* env = getenv("TERN_CONFIG");
  return env ? env : "";
}

}  // namespace

Result<EngineOptions> parse_flags(int argc, char** argv, int* exit_code) {
  *exit_code = -1;
  EngineOptions o;
  std::vector<std::string> pools;
  std::string config_path;
  bool version = false;
  CLI::App app{"io-engine: tern's storage-node daemon. It owns this node's devices, pools, replicas and NVMe/TCP "
               "target, and serves the gRPC API that the control plane and ternctl use."};
  app.footer(kExamples);
  app.get_formatter()->column_width(34);
  auto env = [](const char* name) { return std::string("TERN_") + name; };
  app.add_option("-c,--config", config_path, "YAML file with any of the settings below")->envname(env("CONFIG"));
  app.add_option("-N,--node-name", o.node_name, "This node's name (default: the host name)")->envname(env("NODE_NAME"));
  app.add_option("-g,--grpc-endpoint", o.grpc_endpoint, "Where the gRPC API listens (host:port; port 0 picks a free one)")
      ->envname(env("GRPC_ENDPOINT"))->capture_default_str();
  app.add_option("--nvmf-address", o.nvmf_address, "Address the NVMe/TCP target listens on")
      ->envname(env("NVMF_ADDRESS"))->capture_default_str();
  app.add_option("--nvmf-port", o.nvmf_port, "NVMe/TCP port")->envname(env("NVMF_PORT"))->capture_default_str();
  app.add_option("--advertise-address", o.advertise_address,
                 "Address put in share URIs, which hosts connect to (default: --nvmf-address, or the first "
                 "non-loopback IPv4 address when that is 0.0.0.0)")
      ->envname(env("ADVERTISE_ADDRESS"));
  app.add_option("--nbd-address", o.nbd_address, "Address of the NBD server (local tools; keep it on loopback)")
      ->envname(env("NBD_ADDRESS"))->capture_default_str();
  app.add_option("--nbd-port", o.nbd_port, "NBD port (0: no NBD over TCP)")->envname(env("NBD_PORT"))->capture_default_str();
  app.add_option("--nbd-socket", o.nbd_socket, "Also serve NBD on this unix socket")->envname(env("NBD_SOCKET"));
  app.add_option("--metrics-address", o.metrics_address, "Address of the Prometheus endpoint")
      ->envname(env("METRICS_ADDRESS"))->capture_default_str();
  app.add_option("--metrics-port", o.metrics_port, "Prometheus /metrics port (0: off)")
      ->envname(env("METRICS_PORT"))->capture_default_str();
  app.add_option("-l,--cores", o.cores,
                 "Reactor cores: a list (0,2), a range (0-3) or a mask (0x5) (default: the first core this process "
                 "may use)")
      ->envname(env("CORES"));
  app.add_option("--poll", o.poll,
                 "Reactor polling: adaptive (a reactor sleeps when it has been idle for --idle-spin-us; ~0 % CPU "
                 "when idle) or busy (never sleeps: each reactor always takes a whole core)")
      ->envname(env("POLL"))->check(CLI::IsMember({"adaptive", "busy"}))->capture_default_str();
  app.add_option("--idle-spin-us", o.idle_spin_us, "Adaptive polling: how long a reactor spins without work before "
                 "it sleeps")
      ->envname(env("IDLE_SPIN_US"))->check(CLI::Range(0, 100000))->capture_default_str();
  app.add_option("--await-spin-us", o.await_spin_us,
                 "Adaptive polling: how long a reactor spins without work before it sleeps while it awaits answers "
                 "to NVMe/TCP commands it sent (a nexus's remote children): the answer is due within a round trip, "
                 "and a wake-up costs more than the spin; 0: as --idle-spin-us")
      ->envname(env("AWAIT_SPIN_US"))->check(CLI::Range(0, 100000))->capture_default_str();
  app.add_option("-P,--pool", pools, "A pool to import at start, created if the disk holds none: NAME=DISK_URI "
                                     "(repeat the flag, or comma-separate in the variable)")
      ->envname(env("POOLS"))->delimiter(',');
  app.add_option("--state-dir", o.state_dir, "Where the engine remembers the pools created through the API")
      ->envname(env("STATE_DIR"))->capture_default_str();
  app.add_option("--etcd", o.etcd,
                 "etcd members where nexuses keep their records (host:port, comma-separated; default: none, and "
                 "nexuses with a persistence key are refused)")
      ->envname(env("ETCD"));
  app.add_option("--etcd-timeout-ms", o.etcd_timeout_ms, "Time limit of each etcd request")
      ->envname(env("ETCD_TIMEOUT_MS"))->capture_default_str();
  app.add_option("--nexus-persist-timeout-ms", o.nexus_persist_timeout_ms,
                 "How long a nexus holds host I/O while its record (a child's retire) cannot be written to etcd, "
                 "before it shuts itself down rather than acknowledge what it could not record")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t(100), uint64_t(3'600'000)));
  app.add_option("--agent", o.agents,
                 "Core agents to register with and heartbeat to (host:port of their gRPC; repeat, or "
                 "comma-separate in the variable; default: none, the engine runs on its own)")
      ->envname(env("AGENT"))->delimiter(',');
  app.add_option("--node-label", o.node_labels,
                 "A label of this node for the control plane's placement: KEY=VALUE (zone=a); repeat the flag")
      ->envname(env("NODE_LABELS"))->delimiter(',');
  app.add_option("--log-level", o.log_level, "Log level, or per module: info,nvmf=debug,engine=trace")
      ->envname(env("LOG_LEVEL"))->capture_default_str();
  app.add_option("--log-format", o.log_format, "Log format")
      ->envname(env("LOG_FORMAT"))->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  app.add_flag("-V,--version", version, "Print the version and exit");

  // The config file supplies defaults; environment variables and flags override them.
  std::vector<PoolSpec> file_pools;
  std::string cfg = find_config_path(argc, argv);
  if (!cfg.empty()) {
    YAML::Node root;
    try {
      root = YAML::LoadFile(cfg);
    } catch (const std::exception& e) {
      std::cerr << "io-engine: cannot read the config file '" << cfg << "': " << e.what() << "\n";
      *exit_code = 2;
      return Status(Errc::kInval, "bad config file");
    }
    if (root && !root.IsNull() && !root.IsMap()) {
      std::cerr << "io-engine: the config file '" << cfg << "' must be a mapping of setting: value\n";
      *exit_code = 2;
      return Status(Errc::kInval, "bad config file");
    }
    for (auto kv : root) {
      std::string key = kv.first.as<std::string>();
      if (key == "pools") {
        if (!kv.second.IsSequence()) {
          std::cerr << "io-engine: " << cfg << ": 'pools' must be a list of {name, disk}\n";
          *exit_code = 2;
          return Status(Errc::kInval, "bad config file");
        }
        for (auto p : kv.second) {
          if (!p.IsMap() || !p["name"] || !p["disk"]) {
            std::cerr << "io-engine: " << cfg << ": each pool needs 'name' and 'disk'\n";
            *exit_code = 2;
            return Status(Errc::kInval, "bad config file");
          }
          file_pools.push_back({p["name"].as<std::string>(), p["disk"].as<std::string>()});
        }
        continue;
      }
      CLI::Option* opt = key == "config" || key == "version" || key == "help" ? nullptr : app.get_option_no_throw("--" + key);
      if (!opt) {
        std::cerr << "io-engine: " << cfg << ": unknown setting '" << key << "' (see io-engine --help)\n";
        *exit_code = 2;
        return Status(Errc::kInval, "bad config file");
      }
      try {
        opt->default_val(kv.second.as<std::string>());
      } catch (const std::exception& e) {
        std::cerr << "io-engine: " << cfg << ": '" << key << "': " << e.what() << "\n";
        *exit_code = 2;
        return Status(Errc::kInval, "bad config file");
      }
    }
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    *exit_code = app.exit(e);
    return Status(Errc::kInval, "bad flags");
  }
  if (version) {
    fmt::print("io-engine {}\n", TERN_VERSION);
    *exit_code = 0;
    return Status(Errc::kCanceled, "version printed");
  }
  if (pools.empty()) {
    o.pools = file_pools;
  } else {
    std::set<std::string> names;
    for (auto& p : pools) {
      auto s = parse_pool(p);
      if (!s.ok()) {
        std::cerr << "io-engine: " << s.status().message() << "\n";
        *exit_code = 2;
        return s.status();
      }
      if (!names.insert(s->name).second) {
        std::cerr << "io-engine: --pool: '" << s->name << "' is given twice\n";
        *exit_code = 2;
        return Status(Errc::kInval, "duplicate pool");
      }
      o.pools.push_back(*s);
    }
  }
  for (const std::string& l : o.node_labels) {
    size_t eq = l.find('=');
    if (eq == 0 || eq == std::string::npos) {
      std::cerr << "io-engine: --node-label '" << l << "': expected KEY=VALUE\n";
      *exit_code = 2;
      return Status(Errc::kInval, "bad node label");
    }
  }
  if (o.node_name.empty()) o.node_name = hostname();
  if (o.advertise_address.empty()) {
    o.advertise_address = (o.nvmf_address == "0.0.0.0" || o.nvmf_address == "::") ? first_ipv4() : o.nvmf_address;
  }
  if (o.cores.empty()) {
    std::string all = allowed_cores_string();
    auto list = parse_core_list(all);
    o.cores = list.ok() && !list->empty() ? std::to_string(list->front()) : "0";
  }
  return o;
}

}  // namespace tern::engine
