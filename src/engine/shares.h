// Shares: which devices are exported, over which protocol, to whom — and the URI a client uses.
//
//   NVMe/TCP: one subsystem per device, nqn.2026-11.io.tern:<id> (id = replica UUID or device name),
//             namespace 1 = the device, on the engine's listener; allowed hosts = the subsystem's ACL
//             (empty: any host).   URI: nvmf://<advertised address>:<port>/<nqn>
//   NBD:      one export named <id> on the engine's NBD server.   URI: nbd://<address>:<port>/<id>
//             (nbd+unix:///<id>?socket=<path> when NBD listens only on a unix socket)
//
// Threads: owned by the Engine, lives on reactor 0 (the primary) and is used only there: it drives the
// target's and the NBD server's control state, which live there too.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "engine/types.h"
#include "nvmf/target/target.h"
#include "reactor/task.h"

namespace tern::nbd {
class Server;
}

namespace tern::engine {

inline constexpr const char* kNqnPrefix = "nqn.2026-11.io.tern:";
// The host NQN of a node's nexuses (and of our initiator by default): the prefix and the node name.
inline constexpr const char* kNodeNqnPrefix = "nqn.2026-11.io.tern:node-name:";

// How a device is exported, beyond the protocol and the hosts. Trivially destructible on purpose: it is
// passed (and defaulted) inside co_await expressions, where GCC 12 may destroy a temporary twice.
struct ShareOptions {
  bool read_only = false;
  // NVMe/TCP: the subsystem's controller-ID range (disjoint ranges let two engines export one volume as
  // two paths of a multipath host) and its model string.
  uint16_t cntlid_min = 1;
  uint16_t cntlid_max = 0xFFEF;
  const char* model = "tern volume";
  // NVMe/TCP: the ANA state of the namespace's group on our listener from the first connection on (a
  // standby path must never be seen optimized, not even briefly). Empty: optimized.
  std::optional<nvme::AnaState> ana;
};

struct ShareEndpoints {
  nvmf::ListenAddr nvmf;           // the engine's NVMe/TCP listener
  std::string advertise;           // the address in URIs
  std::string nbd_host;            // "" when NBD over TCP is off
  uint16_t nbd_port = 0;
};

class Shares {
 public:
  Shares(nvmf::Target& target, nbd::Server* nbd, ShareEndpoints ep) : target_(target), nbd_(nbd), ep_(std::move(ep)) {}

  // Shares `device` as `id`. The same protocol again: OK, the allowed hosts replaced. Another protocol:
  // kBusy ("unshare it first"). kNotSup: NBD asked for but the NBD server is off.
  Task<Result<ShareInfo>> share(std::string device, std::string id, ShareProtocol protocol,
                                std::vector<std::string> hosts, ShareOptions opts = {});
  // Removes the share; hosts are disconnected once their I/O has drained. Not shared: OK.
  Task<Status> unshare(std::string device);
  // Replaces the allowed hosts (NVMe/TCP). kInval for an NBD share (NBD has no host identity).
  Status set_hosts(const std::string& device, std::vector<std::string> hosts);
  const ShareInfo* find(const std::string& device) const;
  const std::map<std::string, ShareInfo>& all() const { return shares_; }
  Task<void> unshare_all();

  // Checks a host NQN list (NQN syntax, no duplicates); names the bad entry.
  static Status ValidateHosts(const std::vector<std::string>& hosts);
  static const char* ProtocolName(ShareProtocol p);

 private:
  nvmf::Target& target_;
  nbd::Server* nbd_;
  ShareEndpoints ep_;
  std::map<std::string, ShareInfo> shares_;  // by device name
};

}  // namespace tern::engine
