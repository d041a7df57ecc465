#include "control/spec_store.h"

#include "common/log.h"

namespace tern::control {

void SpecStore::Batch::put(const NodeSpec& s) {
  ops_.push_back(store::TxnOp::Put(store_->keys_.node(s.id), s.ToJson()));
  apply_.push_back([st = store_, s] { st->nodes[s.id] = s; });
}
void SpecStore::Batch::put(const PoolSpec& s) {
  ops_.push_back(store::TxnOp::Put(store_->keys_.pool(s.name), s.ToJson()));
  apply_.push_back([st = store_, s] { st->pools[s.name] = s; });
}
void SpecStore::Batch::put(const ReplicaSpec& s) {
  ops_.push_back(store::TxnOp::Put(store_->keys_.replica(s.uuid), s.ToJson()));
  apply_.push_back([st = store_, s] { st->replicas[s.uuid] = s; });
}
void SpecStore::Batch::put(const VolumeSpec& s) {
  ops_.push_back(store::TxnOp::Put(store_->keys_.volume(s.uuid), s.ToJson()));
  apply_.push_back([st = store_, s] { st->volumes[s.uuid] = s; });
}
void SpecStore::Batch::put(const SnapshotSpec& s) {
  ops_.push_back(store::TxnOp::Put(store_->keys_.snapshot(s.uuid), s.ToJson()));
  apply_.push_back([st = store_, s] { st->snapshots[s.uuid] = s; });
}
void SpecStore::Batch::del_snapshot(const std::string& uuid) {
  ops_.push_back(store::TxnOp::Delete(store_->keys_.snapshot(uuid)));
  apply_.push_back([st = store_, uuid] { st->snapshots.erase(uuid); });
}
void SpecStore::Batch::del_pool(const std::string& name) {
  ops_.push_back(store::TxnOp::Delete(store_->keys_.pool(name)));
  apply_.push_back([st = store_, name] { st->pools.erase(name); });
}
void SpecStore::Batch::del_replica(const std::string& uuid) {
  ops_.push_back(store::TxnOp::Delete(store_->keys_.replica(uuid)));
  apply_.push_back([st = store_, uuid] { st->replicas.erase(uuid); });
}
void SpecStore::Batch::del_volume(const std::string& uuid) {
  ops_.push_back(store::TxnOp::Delete(store_->keys_.volume(uuid)));
  // The nexus record and what lives under it (the rebuild history, <record>/rebuilds) go with the
  // volume. A prefix delete: UUIDs have one length, so it matches this volume's keys only.
  ops_.push_back(store::TxnOp::Delete(store_->keys_.record(uuid), /*prefix=*/true));
  apply_.push_back([st = store_, uuid] { st->volumes.erase(uuid); });
}

namespace {

template <typename Spec>
Task<Status> load_kind(store::EtcdClient& etcd, const std::string& prefix, std::map<std::string, Spec>& out,
                       std::map<std::string, std::string>& unreadable) {
  auto r = co_await etcd.get_prefix(prefix);
  if (!r.ok()) co_return r.status();
  for (const store::KeyValue& kv : r->kvs) {
    auto s = Spec::FromJson(kv.value);
    std::string name = kv.key.substr(prefix.size());
    if (!s.ok()) {
      unreadable[kv.key] = std::string(s.status().message());
      TLOG_WARN("control", "spec {} cannot be read (kept, and its name stays taken): {}", kv.key, s.status());
      continue;
    }
    out.emplace(std::move(name), std::move(*s));
  }
  co_return Status::Ok();
}

}  // namespace

Task<Status> SpecStore::load() {
  loaded_ = false;
  // Read into new maps and replace the copy at once: a load runs across several etcd reads, and the
  // copy's readers (a request, a reconcile pass, another load) must never see it half cleared. A commit
  // applied meanwhile (after a concurrent load finished first) may be missing from what was read: read
  // again then.
  for (int attempt = 0; attempt < 5; ++attempt) {
    const uint64_t at = applied_;
    Copy c;
    if (Status s = co_await read_all(&c); !s.ok()) co_return s;
    if (applied_ != at) continue;
    nodes = std::move(c.nodes);
    pools = std::move(c.pools);
    replicas = std::move(c.replicas);
    volumes = std::move(c.volumes);
    snapshots = std::move(c.snapshots);
    unreadable = std::move(c.unreadable);
    loaded_ = true;
    co_return Status::Ok();
  }
  co_return Status(Errc::kAgain, "the specs kept changing while they were read: try again");
}

Task<Status> SpecStore::read_all(Copy* c) {
  if (Status s = co_await load_kind(etcd_, keys_.nodes(), c->nodes, c->unreadable); !s.ok()) co_return s;
  if (Status s = co_await load_kind(etcd_, keys_.pools(), c->pools, c->unreadable); !s.ok()) co_return s;
  if (Status s = co_await load_kind(etcd_, keys_.replicas(), c->replicas, c->unreadable); !s.ok()) co_return s;
  if (Status s = co_await load_kind(etcd_, keys_.volumes(), c->volumes, c->unreadable); !s.ok()) co_return s;
  co_return co_await load_kind(etcd_, keys_.snapshots(), c->snapshots, c->unreadable);
}

Task<Status> SpecStore::ensure_loaded() {
  if (loaded_) co_return Status::Ok();
  co_return co_await load();
}

Task<Status> SpecStore::commit(Batch b) {
  if (b.ops_.empty()) co_return Status::Ok();
  if (Status s = co_await ensure_loaded(); !s.ok()) co_return s;
  // A spec that could not be read is an operator's to look at: never overwritten or removed here.
  for (const store::TxnOp& op : b.ops_) {
    auto bad = unreadable.find(op.key);
    if (bad != unreadable.end()) {
      co_return Status::Errorf(Errc::kCorruption, "{} holds a spec this agent cannot read ({}); it is left as it is: "
                               "repair or remove it in etcd", op.key, bad->second);
    }
  }
  store::Txn t;
  t.success = std::move(b.ops_);
  auto r = co_await leader_.guarded(std::move(t));
  if (!r.ok()) {
    if (r.code() != Errc::kAccess) loaded_ = false;  // it may have been applied: read it back next time
    co_return r.status();
  }
  if (!r->succeeded) {
    loaded_ = false;
    co_return Status(Errc::kAgain, "the specs changed underneath this agent: reloaded; try again");
  }
  for (auto& f : b.apply_) f();
  ++applied_;
  co_return Status::Ok();
}

Task<Result<std::string>> SpecStore::read(std::string key) {
  auto kv = co_await etcd_.get(key);
  if (!kv.ok()) co_return kv.status();
  co_return std::move(kv->value);
}

const VolumeSpec* SpecStore::volume(const std::string& uuid) const {
  auto it = volumes.find(uuid);
  return it == volumes.end() ? nullptr : &it->second;
}

const PoolSpec* SpecStore::pool(const std::string& name) const {
  auto it = pools.find(name);
  return it == pools.end() ? nullptr : &it->second;
}

std::vector<const ReplicaSpec*> SpecStore::replicas_of(const std::string& volume) const {
  std::vector<const ReplicaSpec*> out;
  for (const auto& [id, r] : replicas) {
    if (r.volume == volume) out.push_back(&r);
  }
  return out;
}

const SnapshotSpec* SpecStore::snapshot(const std::string& uuid) const {
  auto it = snapshots.find(uuid);
  return it == snapshots.end() ? nullptr : &it->second;
}

std::vector<const ReplicaSpec*> SpecStore::replicas_in(const std::string& pool) const {
  std::vector<const ReplicaSpec*> out;
  for (const auto& [id, r] : replicas) {
    if (r.pool == pool) out.push_back(&r);
  }
  return out;
}

}  // namespace tern::control
