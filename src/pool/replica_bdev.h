// ReplicaBdev: a replica, clone or snapshot seen as a device. Requests are split at cluster boundaries by
// the bdev layer (io_boundary_blocks) and looked up in the object's resolved cluster map
// (PoolState::resolve_all): one atomic load and one forwarded request, no lock, no message.
//   - Reads of a cluster that resolves to nothing return zeros without device I/O; reads of an inherited
//     cluster (a snapshot's, for a replica that has not written it since) go to that cluster.
//   - The first write into a cluster the object does not own hops to the primary reactor, where the pool
//     allocates one — zeroed, or copied from the inherited cluster (copy-on-write) — and makes its map
//     record durable before the write is forwarded.
//   - Unmap and write-zeroes of a whole cluster of a thin object release it (the pool's record first);
//     a partial one zeroes that range (copying an inherited cluster first). Snapshots refuse writes.
//
// Threads: created and destroyed on the primary reactor by its Pool; I/O on any reactor. Map entries are
// written only on the primary and read anywhere. Each reactor counts the requests it has in flight to
// the device by epoch, so the primary can wait for everything submitted before a point (replica_drain:
// a cluster just released can be reused only after it) or hold new requests while in-flight ones drain
// (replica_pause / replica_resume: a snapshot is taken between them).
#pragma once

#include <atomic>
#include <memory>
#include <utility>
#include <vector>

#include "bdev/bdev.h"
#include "common/uuid.h"
#include "reactor/task.h"

namespace tern::pool {

class Pool;

// What a replica's bdev shares with its pool.
struct ReplicaShared {
  Pool* pool = nullptr;  // primary reactor only; null once the pool object is gone
  Uuid uuid;
  bool read_only = false;  // a snapshot
  bool thin = true;        // whole-cluster unmaps release the cluster
  size_t clusters = 0;
  std::unique_ptr<std::atomic<uint32_t>[]> map;  // resolved entries: 0, pc + 1, or (pc + 1) | inherited bit
  std::atomic<bool> paused{false};

  // Per reactor, touched only by that reactor (the primary reaches it by submit_to).
  struct alignas(64) PerReactor {
    uint32_t inflight[2] = {0, 0};  // device requests in flight, by the epoch they were submitted in
    uint8_t epoch = 0;
    std::vector<std::pair<void*, BdevIo*>> held;  // requests that arrived while paused (channel, request)
  };
  std::vector<PerReactor> per_reactor;
  bool draining = false;  // primary only: one drain or pause at a time
};

std::unique_ptr<Bdev> make_replica_bdev(BdevProps props, std::shared_ptr<BdevDesc> pool_device,
                                        std::shared_ptr<ReplicaShared> shared, uint64_t cluster_blocks,
                                        uint64_t data_offset_blocks);

// Primary reactor. Waits until every device request submitted to the replica before the call has
// completed, on every reactor (a grace period: a cluster the map no longer points to is unreachable).
Task<void> replica_drain(std::shared_ptr<ReplicaShared> shared);
// Primary reactor. Holds new requests and waits for those in flight; replica_resume resubmits the held
// ones. Between the two the pool may change what the map means (a snapshot).
Task<void> replica_pause(std::shared_ptr<ReplicaShared> shared);
Task<void> replica_resume(std::shared_ptr<ReplicaShared> shared);
// Between replica_pause and replica_resume: the replica grew to `clusters` clusters and `num_blocks`
// blocks. Swaps in a map of the new length (`resolved`: its entries) and grows the device (holders get
// kResized: a target tells its hosts).
void replica_grow(Bdev& replica, std::shared_ptr<ReplicaShared> shared, const std::vector<uint32_t>& resolved,
                  uint64_t num_blocks);

}  // namespace tern::pool
