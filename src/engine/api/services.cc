// The service implementations: each handler translates its request (convert.h), runs one manager call
// on the primary reactor, and translates the answer back — or maps the error to a gRPC status.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <thread>

#include "engine/api/convert.h"
#include "engine/api/grpc_server.h"
#include "engine/api/status_map.h"
#include "engine/engine.h"
#include "tern/engine/v1/bdev.grpc.pb.h"
#include "tern/engine/v1/nexus.grpc.pb.h"
#include "tern/engine/v1/node.grpc.pb.h"
#include "tern/engine/v1/nvmf.grpc.pb.h"
#include "tern/engine/v1/pool.grpc.pb.h"
#include "tern/engine/v1/replica.grpc.pb.h"
#include "tern/engine/v1/snapshot.grpc.pb.h"
#include "tern/engine/v1/stats.grpc.pb.h"
#include "tern/engine/v1/test.grpc.pb.h"

namespace tern::engine {

namespace {

using api::to_domain;
using api::to_message;
using grpc::ServerContext;
using GStatus = grpc::Status;
namespace v1 = ::tern::engine::v1;

// Handlers running now (GrpcServer::Stop waits for them).
std::atomic<int> g_calls_in_flight{0};

// Runs `fn` (a manager call: a Task or a plain function) on the primary reactor and returns its value.
template <typename F>
auto on_primary(Engine& e, F fn) {
  g_calls_in_flight.fetch_add(1);
  struct Done {
    ~Done() { g_calls_in_flight.fetch_sub(1); }
  } done;
  return e.reactors().run_sync(0, fn);
}

GStatus reply(const Status& s) { return to_grpc(s); }

template <typename T, typename Msg>
GStatus reply(const Result<T>& r, Msg* out) {
  if (!r.ok()) return to_grpc(r.status());
  to_message(*r, out);
  return GStatus::OK;
}

template <typename T, typename Field>
void append(const std::vector<T>& values, Field* field) {
  for (const T& v : values) to_message(v, field->Add());
}

class PoolApi final : public v1::PoolService::Service {
 public:
  explicit PoolApi(Engine& e) : e_(e) {}
  GStatus CreatePool(ServerContext*, const v1::CreatePoolRequest* r, v1::Pool* out) override {
    return create(to_domain(*r), PoolMode::kCreate, out);
  }
  GStatus CreateOrImportPool(ServerContext*, const v1::CreatePoolRequest* r, v1::Pool* out) override {
    return create(to_domain(*r), PoolMode::kCreateOrImport, out);
  }
  GStatus ImportPool(ServerContext*, const v1::ImportPoolRequest* r, v1::Pool* out) override {
    return create(to_domain(*r), PoolMode::kImport, out);
  }
  GStatus ExportPool(ServerContext*, const v1::PoolRef* r, v1::Empty*) override {
    return reply(on_primary(e_, [&] { return e_.pools().export_pool(r->name()); }));
  }
  GStatus DestroyPool(ServerContext*, const v1::DestroyPoolRequest* r, v1::Empty*) override {
    return reply(on_primary(e_, [&] { return e_.pools().destroy_pool(r->name(), r->force()); }));
  }
  GStatus GrowPool(ServerContext*, const v1::PoolRef* r, v1::Pool* out) override {
    return reply(on_primary(e_, [&] { return e_.pools().grow_pool(r->name()); }), out);
  }
  GStatus ListPools(ServerContext*, const v1::ListPoolsRequest* r, v1::ListPoolsReply* out) override {
    append(on_primary(e_, [&] { return e_.pools().list_pools(r->name()); }), out->mutable_pools());
    return GStatus::OK;
  }

 private:
  GStatus create(Result<CreatePoolArgs> args, PoolMode mode, v1::Pool* out) {
    if (!args.ok()) return to_grpc(args.status());
    return reply(on_primary(e_, [&] { return e_.pools().create_pool(*args, mode); }), out);
  }
  Engine& e_;
};

class ReplicaApi final : public v1::ReplicaService::Service {
 public:
  explicit ReplicaApi(Engine& e) : e_(e) {}
  GStatus CreateReplica(ServerContext*, const v1::CreateReplicaRequest* r, v1::Replica* out) override {
    auto args = to_domain(*r);
    if (!args.ok()) return to_grpc(args.status());
    return reply(on_primary(e_, [&] { return e_.pools().create_replica(*args); }), out);
  }
  GStatus DestroyReplica(ServerContext*, const v1::ReplicaRef* r, v1::Empty*) override {
    auto ref = to_domain(*r);
    if (!ref.ok()) return to_grpc(ref.status());
    return reply(on_primary(e_, [&] { return e_.pools().destroy_replica(*ref); }));
  }
  GStatus ListReplicas(ServerContext*, const v1::ListReplicasRequest* r, v1::ListReplicasReply* out) override {
    ObjectFilter f = to_domain(*r);
    append(on_primary(e_, [&] { return e_.pools().list_objects(f); }), out->mutable_replicas());
    return GStatus::OK;
  }
  GStatus ResizeReplica(ServerContext*, const v1::ResizeReplicaRequest* r, v1::Replica* out) override {
    auto ref = to_domain(r->replica());
    if (!ref.ok()) return to_grpc(ref.status());
    return reply(on_primary(e_, [&] { return e_.pools().resize_replica(*ref, r->size(), r->allow_shrink()); }), out);
  }
  GStatus ShareReplica(ServerContext*, const v1::ShareReplicaRequest* r, v1::Replica* out) override {
    auto ref = to_domain(r->replica());
    if (!ref.ok()) return to_grpc(ref.status());
    ShareProtocol protocol = to_domain(r->protocol());
    auto hosts = to_domain(r->allowed_hosts());
    return reply(on_primary(e_, [&] { return e_.pools().share_object(*ref, protocol, hosts); }), out);
  }
  GStatus UnshareReplica(ServerContext*, const v1::ReplicaRef* r, v1::Replica* out) override {
    auto ref = to_domain(*r);
    if (!ref.ok()) return to_grpc(ref.status());
    return reply(on_primary(e_, [&] { return e_.pools().unshare_object(*ref); }), out);
  }
  GStatus SetReplicaAllowedHosts(ServerContext*, const v1::SetAllowedHostsRequest* r, v1::Replica* out) override {
    auto ref = to_domain(r->replica());
    if (!ref.ok()) return to_grpc(ref.status());
    auto hosts = to_domain(r->allowed_hosts());
    return reply(on_primary(e_, [&] { return e_.pools().set_allowed_hosts(*ref, hosts); }), out);
  }
  GStatus GetReplicaStats(ServerContext*, const v1::ListReplicasRequest* r, v1::ReplicaStatsReply* out) override {
    std::string filter = r->uuid();
    if (filter.empty() && !r->name().empty()) {
      // By name: find the UUID first.
      ObjectFilter f = to_domain(*r);
      auto found = on_primary(e_, [&] { return e_.pools().list_objects(f); });
      if (found.empty()) return GStatus(grpc::StatusCode::NOT_FOUND, "no replica '" + r->name() + "'");
      filter = found[0].uuid.ToString();
    }
    auto stats = on_primary(e_, [&] { return e_.devices().io_stats(filter, /*objects_only=*/true); });
    if (!stats.ok()) return to_grpc(stats.status());
    append(*stats, out->mutable_stats());
    return GStatus::OK;
  }

 private:
  Engine& e_;
};

class SnapshotApi final : public v1::SnapshotService::Service {
 public:
  explicit SnapshotApi(Engine& e) : e_(e) {}
  GStatus CreateSnapshot(ServerContext*, const v1::CreateSnapshotRequest* r, v1::Replica* out) override {
    auto args = to_domain(*r);
    if (!args.ok()) return to_grpc(args.status());
    return reply(on_primary(e_, [&] { return e_.pools().create_snapshot(*args); }), out);
  }
  GStatus ListSnapshots(ServerContext*, const v1::ListSnapshotsRequest* r, v1::ListReplicasReply* out) override {
    ObjectFilter f = to_domain(*r, ObjectKind::kSnapshot);
    append(on_primary(e_, [&] { return e_.pools().list_objects(f); }), out->mutable_replicas());
    return GStatus::OK;
  }
  GStatus DestroySnapshot(ServerContext*, const v1::ReplicaRef* r, v1::Empty*) override {
    auto ref = to_domain(*r);
    if (!ref.ok()) return to_grpc(ref.status());
    return reply(on_primary(e_, [&] { return e_.pools().destroy_snapshot(*ref); }));
  }
  GStatus CreateClone(ServerContext*, const v1::CreateCloneRequest* r, v1::Replica* out) override {
    auto args = to_domain(*r);
    if (!args.ok()) return to_grpc(args.status());
    return reply(on_primary(e_, [&] { return e_.pools().create_clone(*args); }), out);
  }
  GStatus ListClones(ServerContext*, const v1::ListSnapshotsRequest* r, v1::ListReplicasReply* out) override {
    ObjectFilter f = to_domain(*r, ObjectKind::kClone);
    append(on_primary(e_, [&] { return e_.pools().list_objects(f); }), out->mutable_replicas());
    return GStatus::OK;
  }

 private:
  Engine& e_;
};

class BdevApi final : public v1::BdevService::Service {
 public:
  explicit BdevApi(Engine& e) : e_(e) {}
  GStatus CreateBdev(ServerContext*, const v1::CreateBdevRequest* r, v1::Bdev* out) override {
    return reply(on_primary(e_, [&] { return e_.devices().create(r->uri()); }), out);
  }
  GStatus DestroyBdev(ServerContext*, const v1::DestroyBdevRequest* r, v1::Empty*) override {
    return reply(on_primary(e_, [&] { return e_.devices().destroy(r->name(), r->force()); }));
  }
  GStatus ListBdevs(ServerContext*, const v1::ListBdevsRequest* r, v1::ListBdevsReply* out) override {
    auto devices = on_primary(e_, [&] { return e_.devices().list(r->name()); });
    if (devices.empty() && !r->name().empty()) {
      return GStatus(grpc::StatusCode::NOT_FOUND, "no device '" + r->name() + "'");
    }
    append(devices, out->mutable_bdevs());
    return GStatus::OK;
  }
  GStatus ShareBdev(ServerContext*, const v1::ShareBdevRequest* r, v1::Bdev* out) override {
    ShareProtocol protocol = to_domain(r->protocol());
    auto hosts = to_domain(r->allowed_hosts());
    return reply(on_primary(e_, [&] { return e_.devices().share(r->name(), protocol, hosts); }), out);
  }
  GStatus UnshareBdev(ServerContext*, const v1::BdevRef* r, v1::Bdev* out) override {
    return reply(on_primary(e_, [&] { return e_.devices().unshare(r->name()); }), out);
  }

 private:
  Engine& e_;
};

class NvmfApi final : public v1::NvmfService::Service {
 public:
  explicit NvmfApi(Engine& e) : e_(e) {}
  GStatus ListSubsystems(ServerContext*, const v1::ListSubsystemsRequest* r, v1::ListSubsystemsReply* out) override {
    append(on_primary(e_, [&] { return e_.devices().subsystems(r->nqn()); }), out->mutable_subsystems());
    return GStatus::OK;
  }
  GStatus ListListeners(ServerContext*, const v1::Empty*, v1::ListListenersReply* out) override {
    for (auto& l : on_primary(e_, [&] { return e_.devices().listeners(); })) out->add_listeners(l.to_string());
    return GStatus::OK;
  }
  GStatus SetAnaState(ServerContext*, const v1::SetAnaStateRequest* r, v1::Empty*) override {
    return reply(on_primary(e_, [&] { return e_.devices().set_ana_state(r->nqn(), r->listener(), r->group(), r->state()); }));
  }

 private:
  Engine& e_;
};

class StatsApi final : public v1::StatsService::Service {
 public:
  explicit StatsApi(Engine& e) : e_(e) {}
  GStatus GetIoStats(ServerContext*, const v1::GetIoStatsRequest* r, v1::GetIoStatsReply* out) override {
    auto stats = on_primary(e_, [&] { return e_.devices().io_stats(r->name(), /*objects_only=*/false); });
    if (!stats.ok()) return to_grpc(stats.status());
    append(*stats, out->mutable_stats());
    return GStatus::OK;
  }
  GStatus ResetIoStats(ServerContext*, const v1::GetIoStatsRequest* r, v1::Empty*) override {
    return reply(on_primary(e_, [&] { return e_.devices().reset_io_stats(r->name()); }));
  }
  GStatus GetReactorStats(ServerContext*, const v1::Empty*, v1::GetReactorStatsReply* out) override {
    append(on_primary(e_, [&] { return e_.devices().reactor_stats(); }), out->mutable_reactors());
    return GStatus::OK;
  }

 private:
  Engine& e_;
};

class NodeApi final : public v1::NodeService::Service {
 public:
  explicit NodeApi(Engine& e) : e_(e) {}
  GStatus GetNodeInfo(ServerContext*, const v1::Empty*, v1::NodeInfo* out) override {
    to_message(on_primary(e_, [&] { return e_.node_info(); }), out);
    return GStatus::OK;
  }

 private:
  Engine& e_;
};

class TestApi final : public v1::TestService::Service {
 public:
  explicit TestApi(Engine& e) : e_(e) {}
  GStatus SetErrorRules(ServerContext*, const v1::SetErrorRulesRequest* r, v1::Empty*) override {
    auto rules = to_domain(r->rules());
    return reply(on_primary(e_, [&] { return e_.test_hooks().set_error_rules(r->device(), rules); }));
  }
  GStatus SetDelay(ServerContext*, const v1::SetDelayRequest* r, v1::Empty*) override {
    DelayConfig delays = to_domain(*r);
    return reply(on_primary(e_, [&] { return e_.test_hooks().set_delay(r->device(), delays); }));
  }
  GStatus WritePattern(ServerContext*, const v1::PatternRequest* r, v1::Empty*) override {
    PatternArgs args = to_domain(*r);
    return reply(on_primary(e_, [&] { return e_.test_hooks().write_pattern(args); }));
  }
  GStatus Checksum(ServerContext*, const v1::PatternRequest* r, v1::ChecksumReply* out) override {
    PatternArgs args = to_domain(*r);
    auto sums = on_primary(e_, [&] { return e_.test_hooks().checksum(args); });
    if (!sums.ok()) return reply(sums.status());
    for (uint32_t c : *sums) out->add_crc_per_mib(c);
    return GStatus::OK;
  }
  GStatus VerifyPattern(ServerContext*, const v1::PatternRequest* r, v1::VerifyPatternReply* out) override {
    PatternArgs args = to_domain(*r);
    return reply(on_primary(e_, [&] { return e_.test_hooks().verify_pattern(args); }), out);
  }

 private:
  Engine& e_;
};

class NexusApi final : public v1::NexusService::Service {
 public:
  explicit NexusApi(Engine& e) : e_(e) {}
  GStatus CreateNexus(ServerContext*, const v1::CreateNexusRequest* r, v1::Nexus* out) override {
    auto args = to_domain(*r);
    if (!args.ok()) return reply(args.status());
    return reply(on_primary(e_, [&] { return e_.nexuses().create(*args); }), out);
  }
  GStatus DestroyNexus(ServerContext*, const v1::NexusRef* r, v1::Empty*) override {
    auto u = api::required_uuid("uuid", r->uuid());
    if (!u.ok()) return reply(u.status());
    return reply(on_primary(e_, [&] { return e_.nexuses().destroy(*u); }));
  }
  GStatus ShutdownNexus(ServerContext*, const v1::NexusRef* r, v1::Nexus* out) override {
    auto u = api::required_uuid("uuid", r->uuid());
    if (!u.ok()) return reply(u.status());
    return reply(on_primary(e_, [&] { return e_.nexuses().shutdown(*u); }), out);
  }
  GStatus ListNexuses(ServerContext*, const v1::ListNexusesRequest* r, v1::ListNexusesReply* out) override {
    std::optional<Uuid> filter;
    if (!r->uuid().empty()) {
      auto u = api::required_uuid("uuid", r->uuid());
      if (!u.ok()) return reply(u.status());
      filter = *u;
    }
    auto all = on_primary(e_, [&] { return e_.nexuses().list(filter); });
    append(all, out->mutable_nexuses());
    return GStatus::OK;
  }
  GStatus AddChild(ServerContext*, const v1::AddChildRequest* r, v1::Nexus* out) override {
    auto u = api::required_uuid("uuid", r->uuid());
    if (!u.ok()) return reply(u.status());
    if (r->uri().empty()) return reply(Status(Errc::kInval, "uri: required"));
    return reply(on_primary(e_, [&] { return e_.nexuses().add_child(*u, r->uri()); }), out);
  }
  GStatus RemoveChild(ServerContext*, const v1::ChildRef* r, v1::Nexus* out) override {
    auto u = api::required_uuid("uuid", r->uuid());
    auto c = api::required_uuid("child_uuid", r->child_uuid());
    if (!u.ok()) return reply(u.status());
    if (!c.ok()) return reply(c.status());
    return reply(on_primary(e_, [&] { return e_.nexuses().remove_child(*u, *c); }), out);
  }
  GStatus FaultChild(ServerContext*, const v1::FaultChildRequest* r, v1::Nexus* out) override {
    auto u = api::required_uuid("uuid", r->uuid());
    auto c = api::required_uuid("child_uuid", r->child_uuid());
    if (!u.ok()) return reply(u.status());
    if (!c.ok()) return reply(c.status());
    const nexus::FaultReason reason = to_domain(r->reason());
    return reply(on_primary(e_, [&] { return e_.nexuses().fault_child(*u, *c, reason); }), out);
  }
  GStatus OnlineChild(ServerContext*, const v1::ChildRef* r, v1::Nexus* out) override {
    auto u = api::required_uuid("uuid", r->uuid());
    auto c = api::required_uuid("child_uuid", r->child_uuid());
    if (!u.ok()) return reply(u.status());
    if (!c.ok()) return reply(c.status());
    return reply(on_primary(e_, [&] { return e_.nexuses().online_child(*u, *c); }), out);
  }
  GStatus PublishNexus(ServerContext*, const v1::PublishNexusRequest* r, v1::Nexus* out) override {
    auto u = api::required_uuid("uuid", r->uuid());
    if (!u.ok()) return reply(u.status());
    auto args = to_domain(*r);
    if (!args.ok()) return reply(args.status());
    return reply(on_primary(e_, [&] { return e_.nexuses().publish(*u, *args); }), out);
  }
  GStatus UnpublishNexus(ServerContext*, const v1::NexusRef* r, v1::Nexus* out) override {
    auto u = api::required_uuid("uuid", r->uuid());
    if (!u.ok()) return reply(u.status());
    return reply(on_primary(e_, [&] { return e_.nexuses().unpublish(*u); }), out);
  }
  GStatus SetNexusAnaState(ServerContext*, const v1::SetNexusAnaStateRequest* r, v1::Nexus* out) override {
    auto u = api::required_uuid("uuid", r->uuid());
    if (!u.ok()) return reply(u.status());
    return reply(on_primary(e_, [&] { return e_.nexuses().set_ana_state(*u, r->ana_state()); }), out);
  }
  GStatus ResizeNexus(ServerContext*, const v1::ResizeNexusRequest* r, v1::Nexus* out) override {
    auto u = api::required_uuid("uuid", r->uuid());
    if (!u.ok()) return reply(u.status());
    return reply(on_primary(e_, [&] { return e_.nexuses().resize(*u, r->size()); }), out);
  }
  GStatus CreateNexusSnapshot(ServerContext*, const v1::CreateNexusSnapshotRequest* r, v1::NexusSnapshot* out) override {
    auto u = api::required_uuid("uuid", r->uuid());
    if (!u.ok()) return reply(u.status());
    nexus::SnapshotArgs args;
    args.name = r->name();
    if (args.name.empty()) return reply(Status(Errc::kInval, "name: required"));
    if (!r->snapshot_uuid().empty()) {
      auto su = api::required_uuid("snapshot_uuid", r->snapshot_uuid());
      if (!su.ok()) return reply(su.status());
      args.uuid = *su;
    }
    for (auto& c : r->replicas()) {
      auto cu = api::required_uuid("replicas.child_uuid", c.child_uuid());
      if (!cu.ok()) return reply(cu.status());
      auto su = api::required_uuid("replicas.snapshot_uuid", c.snapshot_uuid());
      if (!su.ok()) return reply(su.status());
      args.child_snapshots[*cu] = *su;
    }
    auto res = on_primary(e_, [&] { return e_.nexuses().snapshot(*u, args); });
    if (!res.ok()) return reply(res.status());
    out->set_uuid(res->uuid.ToString());
    out->set_name(res->name);
    out->set_nexus_uuid(u->ToString());
    out->set_frozen_us(res->frozen_us);
    for (auto& c : res->children) {
      auto* o = out->add_children();
      o->set_child_uuid(c.child.ToString());
      o->set_uri(c.uri);
      o->set_snapshot_uuid(c.snapshot.ToString());
      o->set_outcome(nexus::snapshot_outcome_name(c.outcome));
      o->set_detail(c.detail);
    }
    return GStatus::OK;
  }
  GStatus StartRebuild(ServerContext*, const v1::StartRebuildRequest* r, v1::Rebuild* out) override {
    RebuildCommand cmd;
    cmd.op = RebuildCommand::Op::kStart;
    if (r->has_settings()) cmd.opts = to_domain(r->settings());
    return rebuild(r->uuid(), r->child_uuid(), cmd, out);
  }
  GStatus PauseRebuild(ServerContext*, const v1::ChildRef* r, v1::Rebuild* out) override {
    return rebuild(r->uuid(), r->child_uuid(), {RebuildCommand::Op::kPause, {}, 0}, out);
  }
  GStatus ResumeRebuild(ServerContext*, const v1::ChildRef* r, v1::Rebuild* out) override {
    return rebuild(r->uuid(), r->child_uuid(), {RebuildCommand::Op::kResume, {}, 0}, out);
  }
  GStatus StopRebuild(ServerContext*, const v1::ChildRef* r, v1::Rebuild* out) override {
    return rebuild(r->uuid(), r->child_uuid(), {RebuildCommand::Op::kStop, {}, 0}, out);
  }
  GStatus SetRebuildRate(ServerContext*, const v1::SetRebuildRateRequest* r, v1::Rebuild* out) override {
    return rebuild(r->uuid(), r->child_uuid(), {RebuildCommand::Op::kSetRate, {}, r->rate_bytes_per_s()}, out);
  }
  GStatus ListRebuilds(ServerContext*, const v1::NexusRef* r, v1::ListRebuildsReply* out) override {
    auto u = api::required_uuid("uuid", r->uuid());
    if (!u.ok()) return reply(u.status());
    auto l = on_primary(e_, [&] { return e_.nexuses().rebuilds(*u); });
    if (!l.ok()) return reply(l.status());
    for (const auto& s : l->current) to_message(*u, s, out->add_current());
    for (const auto& s : l->history) to_message(*u, s, out->add_history());
    return GStatus::OK;
  }

 private:
  GStatus rebuild(const std::string& nexus, const std::string& child, RebuildCommand cmd, v1::Rebuild* out) {
    auto u = api::required_uuid("uuid", nexus);
    if (!u.ok()) return reply(u.status());
    auto c = api::required_uuid("child_uuid", child);
    if (!c.ok()) return reply(c.status());
    auto s = on_primary(e_, [&] { return e_.nexuses().rebuild(*u, *c, cmd); });
    if (!s.ok()) return reply(s.status());
    to_message(*u, *s, out);
    return GStatus::OK;
  }

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
  s->services_.push_back(std::make_unique<NexusApi>(engine));
  // The control plane's registration service joins this list in a later issue.
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
