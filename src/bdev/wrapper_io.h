// Internal: what the pass-through wrappers (error, delay, power-cut) share — forwarding a request to the
// base device as a pooled child (child_io.h), and the common factory steps.
#pragma once

#include <memory>
#include <vector>

#include "bdev/bdev.h"
#include "bdev/registry.h"
#include "bdev/child_io.h"

namespace tern {

// Issues a copy of `parent` (the whole request) to `base` as child `c`; `done(&c->io, c)` runs when it
// completes.
inline void forward_io(ChannelRef& base, ChildIo* c, BdevIo* parent, IoDoneFn done) {
  c->parent = parent;
  copy_request(c, *parent, done);
  base.submit(&c->io);
}

// Opens `base` (writable) for a wrapper called `name`; if the base goes away, so does the wrapper.
Result<std::unique_ptr<BdevDesc>> open_wrapper_base(BdevRegistry& reg, const Uri& uri, const std::string& name,
                                                    const std::string& base);
// Properties of a wrapper: the base's geometry under a new name and UUID.
BdevProps wrapper_props(const Bdev& base, std::string name, Uuid uuid, std::string product);

}  // namespace tern
