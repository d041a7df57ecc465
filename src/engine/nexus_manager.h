// NexusManager: the engine's nexuses — create, destroy, shut down, list, child operations, publish to
// hosts over NVMe/TCP (with a controller-ID range and an ANA state, so that two engines can publish one
// volume as two paths) or NBD. The nexus itself is src/nexus; this is the engine's bookkeeping around it
// (idempotent creates, what is published how) and its record store.
//
// Threads: owned by the Engine, lives on reactor 0 (the primary); every method runs there. One operation
// at a time per manager (creates, destroys and publishes are rare; the nexus's own I/O never waits here).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bdev/registry.h"
#include "engine/shares.h"
#include "engine/types.h"
#include "nexus/nexus.h"
#include "nvmf/target/target.h"
#include "reactor/async_mutex.h"

namespace tern::engine {

struct CreateNexusArgs {
  Uuid uuid;
  uint64_t size = 0;
  std::vector<std::string> children;
  std::string persistence_key;
  // Fencing (see nexus::NexusOptions): 0 = no reservations.
  uint64_t resv_key = 0;
  nvme::ResvType resv_type = nvme::ResvType::kWriteExclusive;
  nexus::NexusOptions::Preempt preempt = nexus::NexusOptions::Preempt::kHolder;
  uint64_t preempt_key = 0;
  // Controller IDs used when publishing (0: publish's own, else 1..0xFFEF).
  uint16_t cntlid_min = 0, cntlid_max = 0;
  // Rebuilds (tuning: a repeated create with other values is the same nexus, unchanged).
  bool auto_rebuild = true;
  nexus::RebuildOptions rebuild;
  // The activity log and dirty-region size (nexus::NexusOptions; tuning, like the rebuild's).
  uint32_t al_extents = 256;
  uint32_t region_bytes = 64 << 10;
  std::vector<Uuid> adopt_labels_of;  // nexus::NexusOptions::adopt_labels_of
};

// What to do with a child's rebuild (nexus/rebuild.h).
struct RebuildCommand {
  enum class Op : uint8_t { kStart, kPause, kResume, kStop, kSetRate };
  Op op = Op::kStart;
  std::optional<nexus::RebuildOptions> opts;  // kStart: the nexus's options unless given
  uint64_t rate_bytes_per_s = 0;              // kSetRate (0: no limit)
};

struct RebuildList {
  std::vector<nexus::RebuildStats> current;  // running or paused
  std::vector<nexus::RebuildStats> history;  // the last 64 that ended, oldest first (from the store too)
  nexus::Nexus::RebuildTotals totals;         // every one that ended, counted
};

struct PublishNexusArgs {
  ShareProtocol protocol = ShareProtocol::kNvmf;
  std::vector<std::string> allowed_hosts;
  uint16_t cntlid_min = 0;  // 0: the create's range, else 1..0xFFEF
  uint16_t cntlid_max = 0;
  std::string ana_state;  // "" = optimized
};

struct NexusDesc {
  nexus::NexusInfo info;
  uint64_t resv_key = 0;
  nvme::ResvType resv_type = nvme::ResvType::kWriteExclusive;
  nexus::NexusOptions::Preempt preempt = nexus::NexusOptions::Preempt::kHolder;
  std::optional<ShareInfo> share;
  uint16_t cntlid_min = 1, cntlid_max = 0xFFEF;
  std::string ana_state;
  uint64_t required_child_size = 0;
};

// The nexus's view of the node's target reservations (local children that are also shared).
class TargetReservations final : public nexus::LocalReservations {
 public:
  explicit TargetReservations(nvmf::Target& t) : target_(t) {}
  Result<nvmf::PassthruReply> command(const std::string& device, const std::array<uint8_t, 16>& hostid,
                                      const nvme::Sqe& sqe, const std::vector<uint8_t>& data, uint32_t in_len) override;
  void watch(const std::string& device, const std::array<uint8_t, 16>& hostid, std::function<void()> fenced) override;

 private:
  nvmf::Target& target_;
};

class NexusManager {
 public:
  // `store` may be null (no record store configured): nexuses with a persistence key are refused then.
  // `host_nqn`: the NQN this node's nexuses connect to remote children as (reservations tell nexuses of
  // different nodes apart by it).
  // `snapshots`: how local children's replicas are snapshotted (may be null: snapshots of a nexus with a
  // local child are then refused).
  NexusManager(BdevRegistry& registry, nvmf::Target& target, Shares& shares, nvmf::ListenAddr listener,
               nexus::RecordStore* store, nexus::LocalSnapshots* snapshots, std::string host_nqn,
               uint64_t persist_timeout_ns);

  Task<Result<NexusDesc>> create(CreateNexusArgs args);
  Task<Status> destroy(Uuid uuid);
  // Grows the nexus (its children grew first); a published namespace tells its hosts.
  Task<Result<NexusDesc>> resize(Uuid uuid, uint64_t bytes);
  Task<Result<NexusDesc>> shutdown(Uuid uuid);
  Task<std::vector<NexusDesc>> list(std::optional<Uuid> uuid);
  Task<Result<NexusDesc>> add_child(Uuid uuid, std::string uri);
  Task<Result<NexusDesc>> remove_child(Uuid uuid, Uuid child);
  Task<Result<NexusDesc>> fault_child(Uuid uuid, Uuid child, nexus::FaultReason reason);
  Task<Result<NexusDesc>> online_child(Uuid uuid, Uuid child);
  Task<Result<NexusDesc>> publish(Uuid uuid, PublishNexusArgs args);
  Task<Result<NexusDesc>> unpublish(Uuid uuid);
  Task<Result<NexusDesc>> set_ana_state(Uuid uuid, std::string state);
  // A snapshot of every in-sync child at one point of the write stream (nexus::Nexus::snapshot).
  Task<Result<nexus::SnapshotResult>> snapshot(Uuid uuid, nexus::SnapshotArgs args);

  // Rebuild control: start, pause, resume, stop, rate; the job's stats after the command. Pause, resume and
  // rate with no job running or paused: kNoEnt; stop with none: OK (the last job's stats, if any).
  Task<Result<nexus::RebuildStats>> rebuild(Uuid uuid, Uuid child, RebuildCommand cmd);
  Task<Result<RebuildList>> rebuilds(Uuid uuid);

  // Engine shutdown: every nexus unpublished, shut down cleanly (the record says so) and destroyed.
  Task<void> shutdown_all();

  // Whether `device` is one of our nexuses (the device manager leaves those alone).
  bool is_nexus(const std::string& device) const;

 private:
  struct Entry {
    nexus::Nexus* nx = nullptr;
    CreateNexusArgs args;
    std::optional<PublishNexusArgs> published;
  };
  Result<Entry*> find(const Uuid& uuid);
  Task<NexusDesc> describe(Entry& e);
  Task<Status> destroy_locked(Uuid uuid);

  BdevRegistry& registry_;
  nvmf::Target& target_;
  Shares& shares_;
  nvmf::ListenAddr listener_;
  nexus::RecordStore* store_;
  nexus::LocalSnapshots* snapshots_;
  std::string host_nqn_;
  uint64_t persist_timeout_ns_;
  TargetReservations local_resv_{target_};
  std::map<Uuid, Entry> nexuses_;
  AsyncMutex mu_;
};

}  // namespace tern::engine
