// Internal: what the pass-through wrappers (error, delay) share — a per-channel pool of requests
// forwarded to the base device, each able to carry a timer, and the common factory steps.
#pragma once

#include <memory>
#include <vector>

#include "bdev/bdev.h"
#include "bdev/registry.h"
#include "common/object_pool.h"
#include "reactor/timer.h"

namespace tern {

struct ForwardedIo {
  BdevIo io;             // the request sent to the base device
  BdevIo* parent = nullptr;
  Timer timer;
  ForwardedIo* next = nullptr;  // free list, or the channel's list of held requests
  void* owner = nullptr;        // the wrapper channel
  bool corrupt = false;         // error device: flip a bit of the data read
};

// Per-channel pool of forwarded requests.
class ForwardPool {
 public:
  ForwardedIo* get() {
    ForwardedIo* f = pool_.get();
    f->next = nullptr;
    return f;
  }
  void put(ForwardedIo* f) {
    f->parent = nullptr;
    f->corrupt = false;
    pool_.put(f);
  }

 private:
  ObjectPool<ForwardedIo, 32> pool_;
};

// Copies the request part of `parent` into `f->io` and submits it to `base`.
inline void forward_io(ChannelRef& base, ForwardedIo* f, BdevIo* parent, IoDoneFn done) {
  f->parent = parent;
  BdevIo& c = f->io;
  c.type = parent->type;
  c.offset_blocks = parent->offset_blocks;
  c.num_blocks = parent->num_blocks;
  c.iovs = parent->iovs;
  c.iovcnt = parent->iovcnt;
  c.done = done;
  c.done_arg = f;
  base.submit(&c);
}

// Opens `base` (writable) for a wrapper called `name`; if the base goes away, so does the wrapper.
Result<std::unique_ptr<BdevDesc>> open_wrapper_base(BdevRegistry& reg, const Uri& uri, const std::string& name,
                                                    const std::string& base);
// Properties of a wrapper: the base's geometry under a new name and UUID.
BdevProps wrapper_props(const Bdev& base, std::string name, Uuid uuid, std::string product);

}  // namespace tern
