#include "store/etcd_record_store.h"

namespace tern::store {

Task<Status> EtcdRecordStore::put(std::string key, std::string value) {
  auto rev = co_await client_->put(key, value);
  if (!rev.ok()) co_return rev.status();
  co_return Status();
}

Task<Result<std::string>> EtcdRecordStore::get(std::string key) {
  auto kv = co_await client_->get(key);
  if (!kv.ok()) co_return kv.status();
  co_return std::move(kv->value);
}

}  // namespace tern::store
