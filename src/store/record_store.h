// RecordStore: where small records that must survive a node (a nexus's record of which children hold
// current data) are kept. A put completes once the value is durable in the store, or fails; the caller
// decides how long to retry. EtcdRecordStore (etcd_record_store.h) is the one over etcd; tests may use
// anything with these semantics.
//
// Threads: whatever the implementation says (EtcdRecordStore: the primary reactor).
#pragma once

#include <cstdint>
#include <string>

#include "common/result.h"
#include "reactor/task.h"

namespace tern::store {

class RecordStore {
 public:
  struct Versioned {
    std::string value;
    int64_t version = 0;  // changes with every put; 0: the key is absent (value empty)
  };
  virtual ~RecordStore() = default;
  virtual Task<Status> put(std::string key, std::string value) = 0;
  virtual Task<Result<std::string>> get(std::string key) = 0;  // kNoEnt when absent
  // Compare-and-set, for a writer that must notice being superseded: the value and its version; a put
  // only while the key is still at `expected` (0: absent), returning the new version — kStale when
  // another put (or a delete) came between. A put whose outcome is unknown (an error) may have been
  // applied: read the key to find out.
  virtual Task<Result<Versioned>> get_versioned(std::string key) = 0;
  virtual Task<Result<int64_t>> put_if(std::string key, std::string value, int64_t expected) = 0;
};

}  // namespace tern::store
