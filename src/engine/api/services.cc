// The service implementations: each handler is one Engine call on the primary reactor.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <thread>

#include "engine/api/grpc_server.h"
#include "engine/api/status_map.h"
#include "engine/engine.h"
#include "tern/engine/v1/bdev.grpc.pb.h"
#include "tern/engine/v1/node.grpc.pb.h"
#include "tern/engine/v1/nvmf.grpc.pb.h"
#include "tern/engine/v1/pool.grpc.pb.h"
#include "tern/engine/v1/replica.grpc.pb.h"
#include "tern/engine/v1/snapshot.grpc.pb.h"
#include "tern/engine/v1/stats.grpc.pb.h"
#include "tern/engine/v1/test.grpc.pb.h"

namespace tern::engine {

namespace {

using grpc::ServerContext;
using GStatus = grpc::Status;

// Handlers running now (GrpcServer::Stop waits for them).
std::atomic<int> g_calls_in_flight{0};

// Runs `fn` (returning Task<Result<T>>, Task<Status>, Result<T>, Status or a plain T) on the primary
// reactor and stores its value in `*out`.
template <typename Out, typename F>
GStatus call(Engine& e, Out* out, F fn) {
  g_calls_in_flight.fetch_add(1);
  struct Done {
    ~Done() { g_calls_in_flight.fetch_sub(1); }
  } done;
  auto r = e.reactors().run_sync(0, fn);
  using R = decltype(r);
  if constexpr (std::is_same_v<R, Status>) {
    return to_grpc(r);
  } else if constexpr (requires { r.ok(); r.status(); }) {
    if (!r.ok()) return to_grpc(r.status());
    if constexpr (!std::is_same_v<Out, v1::Empty>) *out = std::move(*r);
    return GStatus::OK;
  } else {
    *out = std::move(r);
    return GStatus::OK;
  }
}

template <typename Msg, typename Vec>
void fill(Msg* out, google::protobuf::RepeatedPtrField<typename Vec::value_type>* field, Vec v) {
  (void)out;
  for (auto& x : v) *field->Add() = std::move(x);
}

std::vector<std::string> strings(const google::protobuf::RepeatedPtrField<std::string>& f) {
  return std::vector<std::string>(f.begin(), f.end());
}

class PoolApi final : public v1::PoolService::Service {
 public:
  explicit PoolApi(Engine& e) : e_(e) {}
  GStatus CreatePool(ServerContext*, const v1::CreatePoolRequest* r, v1::Pool* out) override {
    return call(e_, out, [&] { return e_.create_pool(*r, Engine::PoolMode::kCreate); });
  }
  GStatus CreateOrImportPool(ServerContext*, const v1::CreatePoolRequest* r, v1::Pool* out) override {
    return call(e_, out, [&] { return e_.create_pool(*r, Engine::PoolMode::kCreateOrImport); });
  }
  GStatus ImportPool(ServerContext*, const v1::ImportPoolRequest* r, v1::Pool* out) override {
    v1::CreatePoolRequest c;
    c.set_name(r->name());
    c.set_disk(r->disk());
    return call(e_, out, [&] { return e_.create_pool(c, Engine::PoolMode::kImport); });
  }
  GStatus ExportPool(ServerContext*, const v1::PoolRef* r, v1::Empty* out) override {
    return call(e_, out, [&] { return e_.export_pool(r->name()); });
  }
  GStatus DestroyPool(ServerContext*, const v1::PoolRef* r, v1::Empty* out) override {
    return call(e_, out, [&] { return e_.destroy_pool(r->name()); });
  }
  GStatus GrowPool(ServerContext*, const v1::PoolRef* r, v1::Pool* out) override {
    return call(e_, out, [&] { return e_.grow_pool(r->name()); });
  }
  GStatus ListPools(ServerContext*, const v1::ListPoolsRequest* r, v1::ListPoolsReply* out) override {
    std::vector<v1::Pool> v;
    GStatus s = call(e_, &v, [&] { return e_.list_pools(r->name()); });
    fill(out, out->mutable_pools(), std::move(v));
    return s;
  }

 private:
  Engine& e_;
};

class ReplicaApi final : public v1::ReplicaService::Service {
 public:
  explicit ReplicaApi(Engine& e) : e_(e) {}
  GStatus CreateReplica(ServerContext*, const v1::CreateReplicaRequest* r, v1::Replica* out) override {
    return call(e_, out, [&] { return e_.create_replica(*r); });
  }
  GStatus DestroyReplica(ServerContext*, const v1::ReplicaRef* r, v1::Empty* out) override {
    return call(e_, out, [&] { return e_.destroy_replica(*r, false); });
  }
  GStatus ListReplicas(ServerContext*, const v1::ListReplicasRequest* r, v1::ListReplicasReply* out) override {
    std::vector<v1::Replica> v;
    GStatus s = call(e_, &v, [&] { return e_.list_replicas(*r); });
    fill(out, out->mutable_replicas(), std::move(v));
    return s;
  }
  GStatus ResizeReplica(ServerContext*, const v1::ResizeReplicaRequest* r, v1::Replica* out) override {
    return call(e_, out, [&] { return e_.resize_replica(*r); });
  }
  GStatus ShareReplica(ServerContext*, const v1::ShareReplicaRequest* r, v1::Replica* out) override {
    return call(e_, out, [&] { return e_.share_replica(r->replica(), r->protocol(), strings(r->allowed_hosts())); });
  }
  GStatus UnshareReplica(ServerContext*, const v1::ReplicaRef* r, v1::Replica* out) override {
    return call(e_, out, [&] { return e_.unshare_replica(*r); });
  }
  GStatus SetReplicaAllowedHosts(ServerContext*, const v1::SetAllowedHostsRequest* r, v1::Replica* out) override {
    return call(e_, out, [&] { return e_.set_allowed_hosts(r->replica(), strings(r->allowed_hosts())); });
  }
  GStatus GetReplicaStats(ServerContext*, const v1::ListReplicasRequest* r, v1::ReplicaStatsReply* out) override {
    std::vector<v1::IoStats> v;
    std::string filter = !r->uuid().empty() ? r->uuid() : std::string();
    if (filter.empty() && !r->name().empty()) {
      // By name: find the UUID first.
      std::vector<v1::Replica> reps;
      call(e_, &reps, [&] { return e_.list_replicas(*r); });
      if (reps.empty()) return GStatus(grpc::StatusCode::NOT_FOUND, "no replica '" + r->name() + "'");
      filter = reps[0].uuid();
    }
    GStatus s = call(e_, &v, [&] { return e_.io_stats(filter, /*replicas_only=*/true); });
    fill(out, out->mutable_stats(), std::move(v));
    return s;
  }

 private:
  Engine& e_;
};

class SnapshotApi final : public v1::SnapshotService::Service {
 public:
  explicit SnapshotApi(Engine& e) : e_(e) {}
  GStatus CreateSnapshot(ServerContext*, const v1::CreateSnapshotRequest* r, v1::Replica* out) override {
    return call(e_, out, [&] { return e_.create_snapshot(*r); });
  }
  GStatus ListSnapshots(ServerContext*, const v1::ListSnapshotsRequest* r, v1::ListReplicasReply* out) override {
    std::vector<v1::Replica> v;
    GStatus s = call(e_, &v, [&] { return e_.list_snapshots(*r, false); });
    fill(out, out->mutable_replicas(), std::move(v));
    return s;
  }
  GStatus DestroySnapshot(ServerContext*, const v1::ReplicaRef* r, v1::Empty* out) override {
    return call(e_, out, [&] { return e_.destroy_replica(*r, true); });
  }
  GStatus CreateClone(ServerContext*, const v1::CreateCloneRequest* r, v1::Replica* out) override {
    return call(e_, out, [&] { return e_.create_clone(*r); });
  }
  GStatus ListClones(ServerContext*, const v1::ListSnapshotsRequest* r, v1::ListReplicasReply* out) override {
    std::vector<v1::Replica> v;
    GStatus s = call(e_, &v, [&] { return e_.list_snapshots(*r, true); });
    fill(out, out->mutable_replicas(), std::move(v));
    return s;
  }

 private:
  Engine& e_;
};

class BdevApi final : public v1::BdevService::Service {
 public:
  explicit BdevApi(Engine& e) : e_(e) {}
  GStatus CreateBdev(ServerContext*, const v1::CreateBdevRequest* r, v1::Bdev* out) override {
    return call(e_, out, [&] { return e_.create_bdev(r->uri()); });
  }
  GStatus DestroyBdev(ServerContext*, const v1::DestroyBdevRequest* r, v1::Empty* out) override {
    return call(e_, out, [&] { return e_.destroy_bdev(r->name(), r->force()); });
  }
  GStatus ListBdevs(ServerContext*, const v1::ListBdevsRequest* r, v1::ListBdevsReply* out) override {
    std::vector<v1::Bdev> v;
    GStatus s = call(e_, &v, [&] { return e_.list_bdevs(r->name()); });
    if (s.ok() && v.empty() && !r->name().empty()) {
      return GStatus(grpc::StatusCode::NOT_FOUND, "no device '" + r->name() + "'");
    }
    fill(out, out->mutable_bdevs(), std::move(v));
    return s;
  }
  GStatus ShareBdev(ServerContext*, const v1::ShareBdevRequest* r, v1::Bdev* out) override {
    return call(e_, out, [&] { return e_.share_bdev(r->name(), r->protocol(), strings(r->allowed_hosts())); });
  }
  GStatus UnshareBdev(ServerContext*, const v1::BdevRef* r, v1::Bdev* out) override {
    return call(e_, out, [&] { return e_.unshare_bdev(r->name()); });
  }

 private:
  Engine& e_;
};

class NvmfApi final : public v1::NvmfService::Service {
 public:
  explicit NvmfApi(Engine& e) : e_(e) {}
  GStatus ListSubsystems(ServerContext*, const v1::ListSubsystemsRequest* r, v1::ListSubsystemsReply* out) override {
    std::vector<v1::Subsystem> v;
    GStatus s = call(e_, &v, [&] { return e_.list_subsystems(r->nqn()); });
    fill(out, out->mutable_subsystems(), std::move(v));
    return s;
  }
  GStatus ListListeners(ServerContext*, const v1::Empty*, v1::ListListenersReply* out) override {
    std::vector<std::string> v;
    GStatus s = call(e_, &v, [&] { return e_.list_listeners(); });
    for (auto& l : v) out->add_listeners(l);
    return s;
  }
  GStatus SetAnaState(ServerContext*, const v1::SetAnaStateRequest* r, v1::Empty* out) override {
    return call(e_, out, [&] { return e_.set_ana_state(*r); });
  }

 private:
  Engine& e_;
};

class StatsApi final : public v1::StatsService::Service {
 public:
  explicit StatsApi(Engine& e) : e_(e) {}
  GStatus GetIoStats(ServerContext*, const v1::GetIoStatsRequest* r, v1::GetIoStatsReply* out) override {
    std::vector<v1::IoStats> v;
    GStatus s = call(e_, &v, [&] { return e_.io_stats(r->name(), false); });
    fill(out, out->mutable_stats(), std::move(v));
    return s;
  }
  GStatus ResetIoStats(ServerContext*, const v1::GetIoStatsRequest* r, v1::Empty* out) override {
    return call(e_, out, [&] { return e_.reset_io_stats(r->name()); });
  }
  GStatus GetReactorStats(ServerContext*, const v1::Empty*, v1::GetReactorStatsReply* out) override {
    std::vector<v1::ReactorStats> v;
    GStatus s = call(e_, &v, [&] { return e_.reactor_stats(); });
    fill(out, out->mutable_reactors(), std::move(v));
    return s;
  }

 private:
  Engine& e_;
};

class NodeApi final : public v1::NodeService::Service {
 public:
  explicit NodeApi(Engine& e) : e_(e) {}
  GStatus GetNodeInfo(ServerContext*, const v1::Empty*, v1::NodeInfo* out) override {
    return call(e_, out, [&] { return e_.node_info(); });
  }

 private:
  Engine& e_;
};

class TestApi final : public v1::TestService::Service {
 public:
  explicit TestApi(Engine& e) : e_(e) {}
  GStatus SetErrorRules(ServerContext*, const v1::SetErrorRulesRequest* r, v1::Empty* out) override {
    return call(e_, out, [&] { return e_.set_error_rules(*r); });
  }
  GStatus SetDelay(ServerContext*, const v1::SetDelayRequest* r, v1::Empty* out) override {
    return call(e_, out, [&] { return e_.set_delay(*r); });
  }
  GStatus WritePattern(ServerContext*, const v1::PatternRequest* r, v1::Empty* out) override {
    return call(e_, out, [&] { return e_.write_pattern(*r); });
  }
  GStatus VerifyPattern(ServerContext*, const v1::PatternRequest* r, v1::VerifyPatternReply* out) override {
    return call(e_, out, [&] { return e_.verify_pattern(*r); });
  }

 private:
  Engine& e_;
};

}  // namespace

Result<std::unique_ptr<GrpcServer>> GrpcServer::Start(Engine& engine, const std::string& endpoint) {
  std::unique_ptr<GrpcServer> s(new GrpcServer());
  s->services_.push_back(std::make_unique<PoolApi>(engine));
  s->services_.push_back(std::make_unique<ReplicaApi>(engine));
  s->services_.push_back(std::make_unique<SnapshotApi>(engine));
  s->services_.push_back(std::make_unique<BdevApi>(engine));
  s->services_.push_back(std::make_unique<NvmfApi>(engine));
  s->services_.push_back(std::make_unique<StatsApi>(engine));
  s->services_.push_back(std::make_unique<NodeApi>(engine));
  s->services_.push_back(std::make_unique<TestApi>(engine));
  // The nexus and control-plane registration services join this list in later issues.
  grpc::ServerBuilder b;
  b.AddListeningPort(endpoint, grpc::InsecureServerCredentials(), &s->port_);
  for (auto& svc : s->services_) b.RegisterService(svc.get());
  s->server_ = b.BuildAndStart();
  if (!s->server_ || s->port_ == 0) {
    return Status::Errorf(Errc(EADDRINUSE), "gRPC: cannot listen on '{}' (address in use, or not host:port)", endpoint);
  }
  return s;
}

GrpcServer::~GrpcServer() { Stop(0); }

void GrpcServer::Stop(int deadline_ms) {
  if (!server_) return;
  // Shutdown(deadline) waits out open connections too, not only calls: one idle client channel (a
  // control plane, a test) would hold every stop for the whole deadline. So wait for the handlers in
  // flight here, then shut down without grace (what remains are connections, or a call that arrived
  // in the last instant, which is cancelled and can be retried: every operation is idempotent).
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(deadline_ms);
  while (g_calls_in_flight.load() > 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  server_->Shutdown(std::chrono::system_clock::now());
  server_->Wait();
  server_.reset();
}

}  // namespace tern::engine
