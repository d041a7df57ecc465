// EtcdRecordStore: where a nexus keeps its record (which children hold current data), in etcd.
//
// Implements tern::nexus::RecordStore (src/nexus/record.h): the two member functions below are that
// interface's, declared exactly as there, so the class derives from it (with `override`) once the nexus
// and the store are merged; until then it stands alone, and src/store does not depend on src/nexus.
//
//   put: durable in etcd when it returns OK — etcd acknowledges a put once a quorum has it in its log on
//        disk. Errors are the etcd client's (they name the member, the key and what happened); the nexus
//        retries until its own timeout.
//   get: the value; kNoEnt when the key is absent.
//
// Threads: the primary reactor, like the EtcdClient it uses (which must outlive it).
#pragma once

#include <string>

#include "common/result.h"
#include "reactor/task.h"
#include "store/etcd_client.h"

namespace tern::store {

class EtcdRecordStore {
 public:
  explicit EtcdRecordStore(EtcdClient* client) : client_(client) {}
  virtual ~EtcdRecordStore() = default;

  virtual Task<Status> put(std::string key, std::string value);
  virtual Task<Result<std::string>> get(std::string key);

 private:
  EtcdClient* client_;
};

}  // namespace tern::store
