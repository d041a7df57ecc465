// Subsystem: an NVM subsystem exported by the target — its identity, namespaces, host ACL, listeners,
// ANA states and reservations.
//
// Threads: owned by the primary reactor; every mutation happens there. The I/O path on other reactors
// never reads a Subsystem directly: it reads an immutable SubsystemView, republished (and its version
// bumped) after every change, and picked up by each queue pair at its next command.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "bdev/bdev.h"
#include "common/uuid.h"
#include "nvmf/spec.h"

namespace tern::nvmf {

class Controller;

struct ListenAddr {
  std::string host;
  uint16_t port = 0;
  std::string to_string() const;
  friend bool operator==(const ListenAddr&, const ListenAddr&) = default;
  friend auto operator<=>(const ListenAddr&, const ListenAddr&) = default;
};

// A host's registration on a namespace.
struct Registrant {
  std::array<uint8_t, 16> hostid{};
  uint64_t key = 0;
};

// Reservation state of one namespace (primary reactor).
struct Reservation {
  nvme::ResvType type = nvme::ResvType::kNone;
  std::array<uint8_t, 16> holder{};  // host id of the holder (meaningless for the all-registrants types)
  std::vector<Registrant> registrants;
  uint32_t generation = 0;
  bool held() const { return type != nvme::ResvType::kNone; }
};

// Whether host `hostid` may run a command that reads (`is_read`) or changes (`is_write`) the namespace's
// data under reservation `rv` (NVMe Base 2.0, 8.19: access by reservation type and registration).
bool reservation_allows(const Reservation& rv, const std::array<uint8_t, 16>& hostid, bool is_read, bool is_write);

// What the I/O path needs to know about a namespace.
struct NamespaceView {
  uint32_t nsid = 0;
  Bdev* bdev = nullptr;
  BdevDesc* desc = nullptr;
  uint32_t block_size = 0;
  uint64_t num_blocks = 0;
  uint32_t anagrpid = 1;
  Reservation resv;
};

struct SubsystemView {
  uint64_t version = 0;
  std::vector<NamespaceView> namespaces;  // sorted by nsid
  // ANA state per (listener, group); missing entries are optimized.
  std::map<std::pair<ListenAddr, uint32_t>, nvme::AnaState> ana;
  const NamespaceView* find(uint32_t nsid) const;
  nvme::AnaState ana_state(const ListenAddr& l, uint32_t grp) const;
};

struct SubsystemConfig {
  std::string nqn;
  std::string serial;  // default: derived from the NQN
  std::string model = "tern NVMe controller";
  bool allow_any_host = false;
  std::vector<std::string> hosts;
  uint16_t cntlid_min = 1;
  uint16_t cntlid_max = 0xFFEF;
  bool ana_reporting = true;
  std::vector<ListenAddr> listeners;
  uint32_t max_namespaces = 1024;
};

class Subsystem {
 public:
  struct Namespace {
    uint32_t nsid;
    std::unique_ptr<BdevDesc> desc;
    uint32_t anagrpid;
    Reservation resv;
  };

  explicit Subsystem(SubsystemConfig cfg, bool discovery = false);
  ~Subsystem();

  const std::string& nqn() const { return cfg_.nqn; }
  const SubsystemConfig& config() const { return cfg_; }
  bool is_discovery() const { return discovery_; }

  // --- hosts ---
  bool host_allowed(const std::string& hostnqn) const;
  void set_allow_any_host(bool v) { cfg_.allow_any_host = v; }
  bool add_host(const std::string& hostnqn);
  bool remove_host(const std::string& hostnqn);

  // --- listeners ---
  bool listens_on(const ListenAddr& a) const;
  void add_listener(const ListenAddr& a);
  bool remove_listener(const ListenAddr& a);

  // --- namespaces (descriptor opened by the caller) ---
  Result<uint32_t> add_namespace(std::unique_ptr<BdevDesc> desc, uint32_t nsid, uint32_t anagrpid);
  std::unique_ptr<BdevDesc> remove_namespace(uint32_t nsid);
  Namespace* ns(uint32_t nsid);
  const std::map<uint32_t, Namespace>& namespaces() const { return namespaces_; }

  // --- ANA ---
  void set_ana_state(const ListenAddr& l, uint32_t anagrpid, nvme::AnaState s);
  nvme::AnaState ana_state(const ListenAddr& l, uint32_t anagrpid) const;
  uint64_t ana_change_count() const { return ana_chgcnt_; }
  std::set<uint32_t> ana_groups() const;

  // --- controllers ---
  Result<uint16_t> allocate_cntlid();
  void release_cntlid(uint16_t id);
  std::vector<Controller*>& controllers() { return controllers_; }

  // Republishes the I/O view after any change (namespaces, reservations, ANA).
  void publish();
  // The current view (any thread); `version` is a cheap check for staleness.
  std::shared_ptr<const SubsystemView> view() const;
  uint64_t view_version() const { return version_.load(std::memory_order_acquire); }


 private:
  SubsystemConfig cfg_;
  bool discovery_;
  std::map<uint32_t, Namespace> namespaces_;
  std::map<std::pair<ListenAddr, uint32_t>, nvme::AnaState> ana_;
  uint64_t ana_chgcnt_ = 0;
  std::set<uint16_t> cntlids_in_use_;
  uint16_t next_cntlid_;
  std::vector<Controller*> controllers_;
  mutable std::mutex view_mu_;
  std::shared_ptr<const SubsystemView> view_;
  std::atomic<uint64_t> version_{0};
};

}  // namespace tern::nvmf
