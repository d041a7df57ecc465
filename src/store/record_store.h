// RecordStore: where small records that must survive a node (a nexus's record of which children hold
// current data) are kept. A put completes once the value is durable in the store, or fails; the caller
// decides how long to retry. EtcdRecordStore (etcd_record_store.h) is the one over etcd; tests may use
// anything with these semantics.
//
// Threads: whatever the implementation says (EtcdRecordStore: the primary reactor).
#pragma once

#include <string>

#include "common/result.h"
#include "reactor/task.h"

namespace tern::store {

class RecordStore {
 public:
  virtual ~RecordStore() = default;
  virtual Task<Status> put(std::string key, std::string value) = 0;
  virtual Task<Result<std::string>> get(std::string key) = 0;  // kNoEnt when absent
};

}  // namespace tern::store
