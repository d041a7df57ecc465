// EngineOptions: how an io-engine is set up. Filled from flags, environment and a YAML file by the
// daemon (tools/io-engine/flags.cc), or directly by tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tern::engine {

// A pool the engine imports (or creates) at start.
struct PoolSpec {
  std::string name;
  std::string disk;  // a device URI, e.g. uring:///dev/nvme0n1
};

struct EngineOptions {
  std::string node_name;                   // default: the host name
  std::string grpc_endpoint = "0.0.0.0:10124";
  std::string nvmf_address = "0.0.0.0";    // where the NVMe/TCP target listens
  uint16_t nvmf_port = 8420;
  std::string advertise_address;           // the address in share URIs (default: nvmf_address, or the
                                           // first non-loopback IPv4 address when that is 0.0.0.0)
  std::string nbd_address = "127.0.0.1";   // NBD is for local tools: loopback by default
  uint16_t nbd_port = 10809;               // 0: no NBD over TCP
  std::string nbd_socket;                  // a unix socket path for NBD ("" = none)
  std::string metrics_address = "0.0.0.0";
  uint16_t metrics_port = 9502;            // 0: no metrics endpoint
  std::string cores;                       // reactor cores, e.g. "0,1" (default: the first allowed core)
  std::string poll = "adaptive";           // reactor polling: adaptive (sleep when idle) or busy (never sleep)
  uint64_t idle_spin_us = 20;              // adaptive: idle time before a reactor sleeps
  uint64_t await_spin_us = 250;            // adaptive: the same while our initiator awaits NVMe/TCP answers
  std::vector<PoolSpec> pools;             // imported (or created) at start
  std::string state_dir = "/var/lib/tern/io-engine";  // remembers pools created through the API
  // etcd members where nexuses keep their records ("127.0.0.1:2379,..."; empty: no record store, and
  // nexuses with a persistence key are refused).
  std::string etcd;
  uint64_t etcd_timeout_ms = 5000;  // each etcd request
  // How long a nexus keeps retrying a record write (a child's retire) with host I/O held before it shuts
  // itself down rather than acknowledge what it could not record.
  uint64_t nexus_persist_timeout_ms = 30000;
  // Core agents to register with (host:port of their gRPC, each of them: the leader and its standbys);
  // empty: the engine runs on its own. Labels describe the node's place (zone=a, rack=r1) for placement.
  std::vector<std::string> agents;
  std::vector<std::string> node_labels;  // key=value
  std::string log_level = "info";
  std::string log_format = "text";         // text | json
};

}  // namespace tern::engine
