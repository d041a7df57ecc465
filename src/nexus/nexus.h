// Nexus: one volume, mirrored synchronously to N children — the thing that makes tern a replicated store.
//
// A nexus is a device (a Bdev named by the volume's UUID), so the NVMe/TCP target, NBD, ioperf and a
// later nexus use it unchanged. Its children are devices opened by URI: `bdev:///<name>?uuid=<uuid>` for a
// local replica (no network hop, no copy) and `nvmf://host:port/<nqn>?uuid=<uuid>` for a remote one (the
// nexus creates that device and destroys it again). Every child holds the volume at offset 0 and the
// nexus's metadata after it (layout.h).
//
// I/O (any reactor, through the nexus's per-reactor channel): writes, write-zeroes, unmaps and flushes
// go to every writable child in parallel and complete when all have; a read goes to one in-sync child
// (local first, else the least busy) and is retried on another when it fails. A child that fails a
// request is retired: the retirement is written to the record store *before* any host request that
// depended on it completes, and new requests wait (frozen) meanwhile. The last healthy child is never
// retired. Nothing on this path allocates, locks or sends a message while the children are healthy.
//
// Threads: a Nexus is created, reconfigured and destroyed on the primary reactor (reactor 0): every
// method below runs there. Each reactor's channel (NexusChannel, internal) sees the children through an
// immutable view the primary republishes after each change (one atomic load per request to notice).
// Design: docs/design/nexus.md.
#pragma once

#include <array>
#include <deque>
#include <map>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "bdev/bdev.h"
#include "bdev/registry.h"
#include "common/result.h"
#include "common/uuid.h"
#include "nexus/dirty_log.h"
#include "nexus/layout.h"
#include "nexus/rebuild.h"
#include "nexus/record.h"
#include "nvmf/host/nvmf_bdev.h"
#include "nvmf/spec.h"
#include "reactor/async_mutex.h"
#include "reactor/task_scope.h"
#include "reactor/timer.h"

namespace tern::nexus {

enum class ChildState : uint8_t { kOnline, kFaulted, kClosed };
enum class FaultReason : uint8_t { kNone, kCannotOpen, kIoError, kTimedOut, kNoSpace, kRebuildFailed, kOffline };
enum class SyncState : uint8_t { kSynced, kOutOfSync };
// What list reports: online (every child healthy), degraded (some), faulted (none), shutting down, shutdown.
enum class NexusStatus : uint8_t { kOnline, kDegraded, kFaulted, kShuttingDown, kShutdown };

const char* child_state_name(ChildState s);
const char* fault_reason_name(FaultReason r);
const char* sync_state_name(SyncState s);
const char* nexus_status_name(NexusStatus s);
Result<FaultReason> parse_fault_reason(std::string_view s);

// How a nexus takes part in the reservations of a local child that this node's NVMe/TCP target also
// exposes (the engine's target, through an adapter: the nexus does not reach into the target). Without
// it an older nexus on another node could keep writing the child over the network after this one took
// the volume over, and this one would not notice being taken over itself. Primary reactor.
class LocalReservations {
 public:
  virtual ~LocalReservations() = default;
  // Runs a reservation command as host `hostid` on the namespace(s) exposing `device`; kNoEnt when none
  // does (nobody else can reach the device: nothing to fence).
  virtual Result<nvmf::PassthruReply> command(const std::string& device, const std::array<uint8_t, 16>& hostid,
                                              const nvme::Sqe& sqe, const std::vector<uint8_t>& data,
                                              uint32_t in_len) = 0;
  // `fenced` runs when another host takes `hostid`'s registration or reservation there; an empty
  // function stops watching.
  virtual void watch(const std::string& device, const std::array<uint8_t, 16>& hostid,
                     std::function<void()> fenced) = 0;
};

// Snapshots of local children: the replica behind a device, snapshotted through the node's pools (the
// engine, through an adapter). Remote children's replicas are snapshotted by their own engines, asked
// with a vendor admin command on the child's NVMe/TCP connection (nvmf/vendor.h). Primary reactor.
class LocalSnapshots {
 public:
  virtual ~LocalSnapshots() = default;
  // Takes snapshot `name` / `uuid` of the replica behind `device`; true when that identical snapshot
  // (same UUID, name and source) was there already. kNotSup when the device is no pool replica.
  virtual Task<Result<bool>> take(std::string device, std::string name, Uuid uuid) = 0;
  // Destroys snapshot `uuid` of the replica behind `device` (gone already: OK).
  virtual Task<Status> drop(std::string device, Uuid uuid) = 0;
};

// A snapshot of the volume: one snapshot of each in-sync child's replica, all at the same point of the
// write stream.
struct SnapshotArgs {
  std::string name;  // each replica snapshot's name (1..255 bytes)
  Uuid uuid;         // the volume snapshot's identity (nil: derived from the nexus and the name)
  // A child's snapshot's UUID; a child not listed gets Uuid::Derive(uuid, <child uuid>), so a retry
  // names the same snapshots.
  std::map<Uuid, Uuid> child_snapshots;
};
enum class SnapshotOutcome : uint8_t { kTaken, kExisted, kSkipped, kFailed, kRolledBack };
const char* snapshot_outcome_name(SnapshotOutcome o);
struct ChildSnapshot {
  Uuid child;
  std::string uri;
  Uuid snapshot;
  SnapshotOutcome outcome = SnapshotOutcome::kSkipped;
  std::string detail;  // skipped: why; failed: the error
};
struct SnapshotResult {
  Uuid uuid;
  std::string name;
  std::vector<ChildSnapshot> children;
  uint64_t frozen_us = 0;  // how long host I/O was held
};

struct NexusOptions {
  Uuid uuid;                          // the volume's UUID: the device's name and UUID
  uint64_t size_bytes = 0;            // the volume's size
  std::vector<std::string> children;  // child URIs, each with ?uuid=
  std::string persistence_key;        // where the record lives; empty: no record (tests, standalone)
  // How long a record write may keep failing before the nexus shuts itself down rather than acknowledge
  // what it could not record; retried every `persist_retry_ns` meanwhile.
  uint64_t persist_timeout_ns = 30'000'000'000ull;
  uint64_t persist_retry_ns = 1'000'000'000ull;
  // Fencing with NVMe reservations on remote children (0 = off). The nexus registers `resv_key` on each
  // remote child and holds a reservation of `resv_type`. When another host holds it: kHolder takes it from
  // the holder (an older nexus of the volume, which from then on cannot write a block and shuts itself
  // down at its first Reservation Conflict), kKey only from the holder whose key is `preempt_key`, kNone
  // never (opening the child fails). Local children are claimed instead.
  enum class Preempt : uint8_t { kHolder, kKey, kNone };
  uint64_t resv_key = 0;
  nvme::ResvType resv_type = nvme::ResvType::kWriteExclusive;
  Preempt preempt = Preempt::kHolder;
  uint64_t preempt_key = 0;
  // The host NQN our initiator connects remote children as (reservations tell nexuses apart by the host
  // identifier derived from it). Empty: the initiator's default.
  std::string host_nqn;
  // Reservations on local children that the node's target exposes (null: local children are not fenced).
  LocalReservations* local_resv = nullptr;
  // Snapshots of local children (null: a nexus with a local child cannot take snapshots).
  LocalSnapshots* local_snap = nullptr;
  // How long a snapshot may wait for the requests on the children to finish before it gives up.
  uint64_t drain_timeout_ns = 30'000'000'000ull;
  // Rebuilds: started by themselves for every child that joins or comes back out of sync (added,
  // onlined, stale at create) unless `auto_rebuild` is off; with these options unless a start says others.
  bool auto_rebuild = true;
  RebuildOptions rebuild;
  // The activity log's size in 4 MiB extents (1..1000; 256 = 1 GiB of the volume may be written without
  // a log write): what a successor reconciles at most after an unclean stop.
  uint32_t al_extents = 256;
  // The dirty-region bitmaps' region size (64 KiB .. 1 MiB, a power of two): what a partial rebuild
  // copies per region written while its child was away.
  uint32_t region_bytes = 64 << 10;
  // Nexuses whose labels a child may carry and still be taken as new (a clone of another volume's
  // replica snapshot: a restored volume). Its label is read as none, and overwritten with ours.
  std::vector<Uuid> adopt_labels_of;
};

struct ChildIoCounters {
  uint64_t reads = 0, writes = 0, other = 0, errors = 0;
  uint64_t read_bytes = 0, write_bytes = 0;
};

struct ChildInfo {
  std::string uri;
  Uuid uuid;
  std::string device;  // the device's name in the registry
  ChildState state = ChildState::kOnline;
  FaultReason reason = FaultReason::kNone;
  SyncState sync = SyncState::kSynced;
  bool local = false;
  uint64_t generation = 0;  // of the data the child holds, as its label says
  ChildIoCounters io;
  // Its dirty-region log (it left while in sync): bytes written since, and the generation it left at.
  bool tracked = false;
  uint64_t dirty_bytes = 0, tracked_since_gen = 0;
  std::optional<RebuildStats> rebuild;  // its rebuild job (running, paused, or the last one's result)
};

struct NexusInfo {
  Uuid uuid;
  uint64_t generation = 0;  // the volume's data generation (docs/design/rebuild.md)
  uint64_t size_bytes = 0;
  uint32_t block_size = 0;
  NexusStatus status = NexusStatus::kOnline;
  std::string persistence_key;
  std::vector<ChildInfo> children;
  DirtyLog::Stats log;  // the activity log and reconcile
};

class NexusChannel;
struct ChildView;

class Nexus final : public Bdev {
 public:
  // Opens every child (any failure fails the whole create and leaves nothing behind), checks the
  // geometry (same block size; every child holds the volume and the metadata region), writes each
  // child's label, writes the record (every child healthy), and registers the device. `store` (may be
  // null when there is no persistence key) must outlive the nexus.
  static Task<Result<Nexus*>> Create(BdevRegistry& registry, NexusOptions opts, RecordStore* store);
  ~Nexus() override;

  const Uuid& uuid() const { return opts_.uuid; }
  const Layout& layout() const { return layout_; }
  // State, children and their I/O counters (gathered from every reactor's channel).
  Task<NexusInfo> info();
  NexusStatus status() const;

  // --- children (primary reactor) ---
  // Adds a child; it joins out of sync (a write-only member until a rebuild makes it in sync).
  Task<Status> add_child(std::string uri);
  Task<Status> remove_child(Uuid child);
  // Faults a child by request (reason offline unless given). The last healthy child cannot be faulted.
  Task<Status> fault_child(Uuid child, FaultReason reason);
  // Opens a faulted or closed child again; it comes back out of sync.
  Task<Status> online_child(Uuid child);
  // Grows the volume to `new_bytes` after every child grew (each must hold the new volume plus the
  // metadata region; remote children's sizes are re-read from their controllers). The metadata region
  // moves to after the new end: labels are written there first, then the old region (now volume space)
  // is zeroed, then the size grows and holders (the NVMe/TCP target: a namespace change for hosts) get
  // kResized. Every child must be online and in sync (a dirty-region log is sized for one volume size).
  // The same size again: OK. Smaller: kInval.
  Task<Status> resize(uint64_t new_bytes);
  // The nexus's own size (the target's rescan of a namespace asks): growing is resize()'s job.
  Result<uint64_t> rescan() override { return num_blocks() * props().block_size; }

  // A snapshot of every in-sync child at one point of the write stream: new host requests are held
  // (not failed), the ones on the children finish, each child's replica is snapshotted (local ones
  // through opts.local_snap, remote ones by their engine), and the requests flow again. Faulted and
  // out-of-sync children are skipped (and reported so). When any in-sync child fails, or only some
  // had the snapshot already (an earlier attempt that did not finish), the snapshots this call took are
  // destroyed again and the error names the child: a set of snapshots from different points is never
  // left behind by this call. Every child had it already: OK (a retry of a snapshot that was taken).
  Task<Result<SnapshotResult>> snapshot(SnapshotArgs args);

  // Range lock, for a rebuild copying [lba, lba + blocks) to a child: new host requests that change data
  // there wait (on every reactor), requests elsewhere and reads go on; returns once every data-changing
  // request started before the lock has completed (kTimedOut after `timeout_ns`, the lock released). One
  // at a time; never while holding the nexus's reconfiguration lock (a parked write's retire needs it).
  Task<Status> lock_range(uint64_t lba, uint64_t blocks, uint64_t timeout_ns);
  Task<void> unlock_range();
  // Waits until every data-changing request started before the call has completed, on every reactor
  // (the activity log, before an extent leaves it). kTimedOut after `timeout_ns`.
  Task<Status> write_barrier(uint64_t timeout_ns);
  // The lock in force ([lba, end)), if any: what a channel created meanwhile must apply. Any thread.
  std::optional<std::pair<uint64_t, uint64_t>> range_lock() const {
    std::lock_guard lk(view_mu_);
    return range_lock_;
  }

  // --- rebuild (primary reactor; rebuild.h) ---
  // Starts copying the volume to `child` (online, out of sync) from an in-sync child. A job already
  // running or paused for it: OK (its options stay; set_rate() changes the rate). `opts`: the nexus's
  // rebuild options unless given.
  Task<Status> start_rebuild(Uuid child, std::optional<RebuildOptions> opts = std::nullopt);
  // The child's current job or its last one (null: none since the nexus started).
  RebuildJob* rebuild_job(const Uuid& child);
  // Finished jobs, oldest first (the last 64), kept in the store next to the record (`<key>/rebuilds`)
  // when there is one, so they outlive the nexus and its engine.
  const std::deque<RebuildStats>& rebuild_history() const { return rebuild_history_; }
  // Every job that ended since the nexus started, counted (metrics).
  struct RebuildTotals {
    uint64_t completed = 0, stopped = 0, failed = 0, copied_bytes = 0;
  };
  const RebuildTotals& rebuild_totals() const { return rebuild_totals_; }

  // Holds all I/O (hosts wait rather than see errors), closes the children, writes clean_shutdown.
  // Idempotent once done; the device stays until destroyed.
  Task<Status> shutdown_nexus();
  // Before the registry destroys the device: fails held I/O, closes and releases the children.
  Task<void> close_children();

  // Tests: how many record writes were done, and requests held right now.
  uint64_t record_writes() const { return record_writes_; }
  uint64_t generation() const { return generation_; }

  // --- Bdev ---
  bool supports(IoType t) const override;
  Result<std::unique_ptr<ChannelCtx>> create_channel(Reactor& r) override;
  void submit(ChannelCtx* ctx, BdevIo* io) override;
  Task<void> shutdown() override;
  Task<void> on_remove() override;

 private:
  friend class NexusChannel;
  friend class RebuildJob;
  friend class DirtyLog;
  struct Child;

  Nexus(BdevProps props, NexusOptions opts, Layout layout, BdevRegistry& reg, RecordStore* store);

  // Opening and labelling a child.
  Task<Result<std::unique_ptr<Child>>> open_child(const std::string& uri, bool creating);
  // Writes the child's label (in `at`'s metadata region; default: the current layout). In sync: the label
  // carries the nexus's generation; out of sync: the generation of the data the child held before.
  Task<Status> write_label(Child& c, bool in_sync, const Layout* at = nullptr);
  // The child's newest valid label of this volume, if any (kExist for another volume's label).
  struct LabelRead {
    std::optional<ChildLabel> newest;
    bool newest_in_a = false;
    bool adopted = false;  // a slot held a label of a nexus in adopt_labels_of
  };
  Task<Result<LabelRead>> read_label(Child& c, const Layout& at);
  // A new generation: recorded first, then written to every in-sync child's label (best effort: a child
  // whose label could not be written looks stale later, which costs a rebuild, never data).
  Task<Status> new_generation(const char* why);
  // At create: the generation to start at, and which children are stale (out of sync).
  Task<Status> settle_generations();
  // Registers our key on a child and acquires (or preempts) its reservation: remote children over their
  // NVMe/TCP connection, local ones through the node's target (opts_.local_resv).
  Task<Status> fence(Child& c);
  Task<Result<nvmf::PassthruReply>> resv_command(Child& c, nvme::Sqe sqe, std::vector<uint8_t> data, uint32_t in_len);
  std::array<uint8_t, 16> host_id() const;
  // A child answered Reservation Conflict, or a local child's reservation was taken: a newer nexus
  // fenced this one off.
  void fenced_off(uint32_t slot);
  void fenced_off_by(std::string who);
  void fence_shutdown(std::string who);
  void watch_local(Child& c);
  Task<void> release_child(Child& c);
  // Waits until the writes counted in every channel's old epoch (before its last flip) have completed,
  // polling from `wait_ns` (doubling up to `max_wait_ns`); how many are still out at `until` (0: none).
  Task<uint64_t> drain_old_writes(uint64_t until, uint64_t wait_ns, uint64_t max_wait_ns);
  // Republishes the children view and waits until every reactor's channel has taken it.
  Task<void> publish();
  std::shared_ptr<const ChildView> view() const;

  // Record writes: compare-and-set against the version this nexus last wrote (or read at its creation),
  // so a nexus superseded by a newer one of the volume can never overwrite the newer one's record: its
  // put finds another writer's value (kStale) and it shuts itself down (fenced), acknowledging nothing
  // more. Other failures are retried until the timeout, then the nexus shuts itself down. At creation
  // (`takeover`) a record written meanwhile by another (older) nexus is read again and overwritten.
  NexusRecord record() const;
  Task<Status> persist(bool takeover = false);

  // Retire (primary): a reactor reports that `child` failed a request.
  Task<Status> retire(Uuid child, FaultReason reason);
  // From a reactor: `slots` failed `parent`; complete it once they are retired (or with an error).
  void request_retire(unsigned reactor, BdevIo* parent, uint32_t failed_slots, Errc first_error);
  void report_fault(uint32_t slot, uint64_t version, Errc e);
  // Host requests are held while any freeze is in force (a retire, a snapshot); unfreeze releases them
  // when the last one ends. Primary reactor.
  void freeze();
  void unfreeze();
  // Waits until no request is on a child and none waits for a retire, on every reactor (kTimedOut after
  // `timeout_ns`).
  Task<Status> drain(uint64_t timeout_ns);
  Task<Result<bool>> take_child_snapshot(Child& c, const std::string& name, Uuid snap);
  Task<Status> drop_child_snapshot(Child& c, Uuid snap);
  Task<void> self_shutdown(const char* why);
  // Rebuild jobs' side of the nexus: the source for a segment (in sync, online, local first, not in
  // `exclude`), the destination if it is still the one the job began with, the end of a copy (label,
  // view, record), a destination that failed (faulted: rebuild_failed), a job's end (history).
  Child* rebuild_source(const Uuid& dest, uint32_t exclude_slots);
  Child* rebuild_destination(const Uuid& dest, uint64_t incarnation);
  Task<Status> complete_rebuild(Uuid dest, uint64_t incarnation);
  Task<void> rebuild_failed(Uuid dest, uint64_t incarnation);
  // A rebuild's checkpoint on its destination (layout.h, RebuildCheckpoint): written flushed and FUA.
  Task<Status> write_checkpoint(Child& c, uint64_t token, uint64_t done_bytes);
  Task<Result<RebuildCheckpoint>> read_checkpoint(Child& c);
  void rebuild_ended(RebuildJob& job);
  // Stops every job and waits for them to end (shutdown, destroy).
  Task<void> stop_rebuilds(const char* why);
  // Auto-rebuild: a job for each online, out-of-sync child without one.
  void auto_rebuilds();
  // The rebuild history in the store: loaded at create, written (best effort, one writer) when a job ends.
  Task<void> load_rebuild_history();
  void save_rebuild_history();
  std::string history_key() const { return opts_.persistence_key + "/rebuilds"; }
  Child* find_child(const Uuid& u);
  size_t healthy_children() const;
  static FaultReason reason_for(Errc e);

  // I/O counters of each child slot, per reactor (written only by that reactor's channel, read by
  // info() on that reactor), with the child incarnation they belong to.
  struct ReactorCounters {
    std::array<ChildIoCounters, kMaxChildren> io{};
    std::array<uint64_t, kMaxChildren> incarnation{};
  };

  NexusOptions opts_;
  Layout layout_;
  BdevRegistry& registry_;
  RecordStore* store_;
  std::vector<std::unique_ptr<Child>> children_;
  // The children as the I/O path sees them (see publish()).
  mutable std::mutex view_mu_;
  std::shared_ptr<const ChildView> view_;
  std::optional<std::pair<uint64_t, uint64_t>> range_lock_;  // under view_mu_
  std::atomic<uint64_t> view_version_{0};
  std::vector<ReactorCounters> counters_;
  // Per reactor: its channel, when it has one (set and cleared on that reactor).
  std::vector<NexusChannel*> channels_;
  std::atomic<bool> frozen_{false};
  uint32_t freezes_ = 0;  // primary: freezes in force
  std::atomic<bool> shutdown_{false};  // no more I/O: held forever (shutdown) or failed (destroy)
  std::atomic<bool> fenced_{false};    // a child answered Reservation Conflict (any reactor sets it once)
  bool shutting_down_ = false;  // shutdown_nexus (or a self-shutdown) began
  bool shut_done_ = false;      // ...and finished
  bool failing_held_ = false;   // held requests fail instead of waiting (destroy, self-shutdown)
  uint64_t record_writes_ = 0;
  uint64_t writer_ = 0;       // this instance's token in the record (NexusRecord::writer)
  int64_t record_rev_ = 0;    // the record's version as this nexus last wrote or read it (0: absent)
  uint64_t generation_ = 0;  // primary
  AsyncMutex ops_mu_;   // one reconfiguration at a time (retire, add, remove, fault, online, shutdown)
  AsyncMutex snap_mu_;  // one snapshot at a time (taken before ops_mu_)
  AsyncMutex epoch_mu_;  // the channels' write epochs: one range lock or write barrier flips them at a time
  std::unique_ptr<DirtyLog> dlog_;  // the activity log and dirty bitmaps (its lock before ops_mu_)
  std::vector<std::unique_ptr<RebuildJob>> rebuilds_;  // one per child at most (the current or last job)
  std::deque<RebuildStats> rebuild_history_;
  RebuildTotals rebuild_totals_;
  bool history_dirty_ = false, history_writing_ = false;
  TaskScope tasks_{"nexus"};  // retires, self-shutdown, rebuild jobs (primary reactor)
};

}  // namespace tern::nexus
