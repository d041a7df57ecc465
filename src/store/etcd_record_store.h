// EtcdRecordStore: where a nexus keeps its record (which children hold current data), in etcd.
//
// The RecordStore (record_store.h) the nexus uses.
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
#include "store/record_store.h"

namespace tern::store {

class EtcdRecordStore final : public RecordStore {
 public:
  explicit EtcdRecordStore(EtcdClient* client) : client_(client) {}

  Task<Status> put(std::string key, std::string value) override;
  Task<Result<std::string>> get(std::string key) override;
  // The version is the key's mod_revision; put_if is one transaction comparing it.
  Task<Result<Versioned>> get_versioned(std::string key) override;
  Task<Result<int64_t>> put_if(std::string key, std::string value, int64_t expected) override;

 private:
  EtcdClient* client_;
};

}  // namespace tern::store
