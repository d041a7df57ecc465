// Internal to src/nexus: a nexus's child as the primary reactor keeps it (Nexus::Child), shared by
// nexus.cc and rebuild.cc. Primary reactor only.
#pragma once

#include <memory>
#include <string>

#include "bdev/bdev.h"
#include "common/uuid.h"
#include "nexus/nexus.h"

namespace tern::nexus {

struct Nexus::Child {
  std::string uri;
  bool watched = false;        // a local child whose reservation we watch (opts_.local_resv)
  Uuid uuid;
  std::string device;          // the device's name in the registry
  bool created = false;        // the nexus created the device (nvmf://) and destroys it again
  bool local = false;
  bool flushable = false;
  uint32_t slot = 0;
  uint64_t incarnation = 0;    // new each time the child is (re)opened
  std::unique_ptr<BdevDesc> desc;
  ChildState state = ChildState::kOnline;
  FaultReason reason = FaultReason::kNone;
  SyncState sync = SyncState::kSynced;
  uint64_t label_seq = 0;
  bool newest_in_a = false;
  uint64_t data_gen = 0;     // the generation of the data the child holds (its label's)
  bool labelled = false;     // it had a label of this volume when opened
  uint32_t pins = 0;         // a rebuild's requests on `desc`: release_child waits for them
  uint64_t rebuild_token = 0;  // its rebuild checkpoint's token while it gets every write (0: none)
  // An in-sync label was written (or attempted: a failed write may still have landed) while the nexus
  // does not count the child as in sync: if it is retired now, a new generation makes that label stale.
  bool label_may_claim_sync = false;

  // One request on the child from the primary reactor, pinned (kNoDev once the child is closed): read,
  // write (with `fua`), write-zeroes or flush.
  Task<Errc> io(IoType t, void* buf, uint64_t lba, uint64_t blocks, bool fua = false);

  // Held around a rebuild's request on the child: the descriptor stays open meanwhile.
  struct Pin {
    explicit Pin(Child& c) : c_(c) { ++c_.pins; }
    ~Pin() { --c_.pins; }
    Pin(const Pin&) = delete;
    Pin& operator=(const Pin&) = delete;
    Child& c_;
  };
};

}  // namespace tern::nexus
