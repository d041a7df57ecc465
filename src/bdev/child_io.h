// Child requests and joins: serving one request with others.
//
// A layer often serves a request (the parent) by issuing requests of its own (children): the device
// layer cuts a long request into pieces, a wrapper (error, delay, power-cut, a replica) forwards a copy
// to its base, the nexus writes every child replica. Each of them needs the same two things, written
// once here:
//
//  - ChildIo: the child request, with room for a slice of the parent's scatter list and a timer, pooled
//    per channel (ChildIoPool) so that issuing one never allocates once the pool is warm.
//  - IoJoin: the parent completes when its last child does, with the first error. The issuer holds the
//    join open while it issues (open() ... close()), so a child completing early cannot finish the
//    parent before its siblings are out.
//
//   IoJoin& j = ...;                        // in the parent's state (BdevIo::join, or driver_ctx)
//   j.open();
//   for (each target) { ChildIo* c = pool.get(parent, owner); copy_request(c, *parent); j.add(); submit }
//   if (j.close()) complete(parent, j.status);
//   // in each child's completion: if (j.arrive(c->io.status)) complete(parent, j.status);
//
// Threads: a pool and the children it hands out belong to one reactor (the channel's).
#pragma once

#include <sys/uio.h>

#include <cstdint>

#include "bdev/bdev_io.h"
#include "common/object_pool.h"
#include "reactor/timer.h"

namespace tern {

class ChannelRef;

struct ChildIo {
  static constexpr int kMaxIovs = 32;

  BdevIo io;                // the child request itself; its done_arg is this ChildIo
  BdevIo* parent = nullptr;
  void* owner = nullptr;    // the issuing layer's per-channel state
  uint32_t index = 0;       // the issuing layer's tag (a nexus child's slot, a replica's epoch)
  uint32_t flags = 0;       // the issuing layer's use (the error device: corrupt the data read back)
  ChildIo* next = nullptr;  // the issuing layer's lists (requests a wrapper holds)
  Timer timer;              // for layers that hold completions (delay, error)
  iovec iovs[kMaxIovs];     // a slice of the parent's scatter list, when the child covers part of it

  // The child whose completion this is (every child's done_arg is the child).
  static ChildIo* from(void* done_arg) { return static_cast<ChildIo*>(done_arg); }
};

class ChildIoPool {
 public:
  ChildIo* get(BdevIo* parent, void* owner) {
    ChildIo* c = pool_.get();
    c->parent = parent;
    c->owner = owner;
    c->index = 0;
    c->flags = 0;
    c->next = nullptr;
    return c;
  }
  void put(ChildIo* c) {
    c->parent = nullptr;
    pool_.put(c);
  }
  size_t capacity() const { return pool_.capacity(); }

 private:
  ObjectPool<ChildIo, 16> pool_;
};

// Copies the request part of `parent` (type, range, the whole scatter list, FUA) into `c` and points
// its completion at `done` with the child as argument. For children that cover the parent whole.
inline void copy_request(ChildIo* c, const BdevIo& parent, IoDoneFn done) {
  BdevIo& io = c->io;
  io.type = parent.type;
  io.offset_blocks = parent.offset_blocks;
  io.num_blocks = parent.num_blocks;
  io.iovs = parent.iovs;
  io.iovcnt = parent.iovcnt;
  io.fua = parent.fua;
  io.done = done;
  io.done_arg = c;
}

}  // namespace tern
