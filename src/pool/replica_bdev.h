// ReplicaBdev: a thick replica seen as a device. Requests are split at cluster boundaries by the bdev
// layer (io_boundary_blocks), translated through the replica's cluster map and forwarded to the pool's
// device on the submitting reactor: one lookup and one forwarded request, no lock, no message.
//
// Threads: created and destroyed on the primary reactor by its Pool; I/O on any reactor. The map is
// immutable while the bdev exists (thick replicas do not allocate; resize will republish it).
#pragma once

#include <memory>
#include <vector>

#include "bdev/bdev.h"

namespace tern::pool {

std::unique_ptr<Bdev> make_replica_bdev(BdevProps props, std::shared_ptr<BdevDesc> pool_device, std::vector<uint32_t> map,
                                        uint64_t cluster_blocks, uint64_t data_offset_blocks);

}  // namespace tern::pool
