// Engines: the agent's calls to the io-engines' gRPC API (proto/tern/engine/v1), awaited on the agent's
// reactor without blocking it.
//
//   ev1::CreateReplicaRequest req = ...;
//   Result<ev1::Replica> r = co_await engines.call<ev1::ReplicaService>(
//       "10.0.0.2:10124", &ev1::ReplicaService::Stub::async::CreateReplica, req);
//
// A call uses gRPC's callback API: the request leaves on gRPC's threads, and its completion is posted back
// to the reactor that awaits it. Every call has a deadline (the default, or the one given). Errors are
// the engine's, mapped to Errc (NOT_FOUND -> kNoEnt, ALREADY_EXISTS -> kExist, FAILED_PRECONDITION ->
// kBusy, RESOURCE_EXHAUSTED -> kNoSpc, INVALID_ARGUMENT -> kInval, DEADLINE_EXCEEDED -> kTimedOut,
// UNAVAILABLE -> kConnRefused), the message prefixed with the engine's endpoint.
//
// Threads: an Engines object lives on the agent's primary reactor; call() is awaited there. Channels
// (one per endpoint, kept) are created there too.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <coroutine>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "common/result.h"
#include "reactor/reactor.h"
#include "reactor/reactor_set.h"
#include "reactor/task.h"
#include "tern/engine/v1/nexus.grpc.pb.h"
#include "tern/engine/v1/node.grpc.pb.h"
#include "tern/engine/v1/pool.grpc.pb.h"
#include "tern/engine/v1/replica.grpc.pb.h"
#include "tern/engine/v1/snapshot.grpc.pb.h"

namespace tern::control {

namespace ev1 = ::tern::engine::v1;  // the engines' API (tern::control::v1 is the agent's own)

// grpc status -> Status, "engine <endpoint>: <message>".
Status from_grpc(const std::string& endpoint, const grpc::Status& s);

class Engines {
 public:
  explicit Engines(uint64_t default_timeout_ms = 15'000) : default_timeout_ms_(default_timeout_ms) {}

  template <typename Service, typename Req, typename Resp>
  Task<Result<Resp>> call(const std::string& endpoint,
                          void (Service::Stub::async::*method)(grpc::ClientContext*, const Req*, Resp*,
                                                               std::function<void(grpc::Status)>),
                          const Req& req, uint64_t timeout_ms = 0) {
    Awaiter<Service, Req, Resp> a;
    a.stub = Service::NewStub(channel(endpoint));
    a.call = [method, stub = a.stub.get()](grpc::ClientContext* c, const Req* q, Resp* p, std::function<void(grpc::Status)> cb) {
      (stub->async()->*method)(c, q, p, std::move(cb));
    };
    a.req = &req;
    a.ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(timeout_ms ? timeout_ms : default_timeout_ms_));
    co_await a;
    if (!a.status.ok()) co_return from_grpc(endpoint, a.status);
    co_return std::move(a.resp);
  }

  // Forgets the channel to `endpoint` (an engine that moved, or restarted on another port).
  void forget(const std::string& endpoint) { channels_.erase(endpoint); }

 private:
  template <typename Service, typename Req, typename Resp>
  struct Awaiter {
    std::unique_ptr<typename Service::Stub> stub;
    std::function<void(grpc::ClientContext*, const Req*, Resp*, std::function<void(grpc::Status)>)> call;
    const Req* req = nullptr;
    grpc::ClientContext ctx;
    Resp resp;
    grpc::Status status;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
      Reactor* r = Reactor::current();
      ReactorSet* set = &r->set();
      unsigned core = r->id();
      // The completion comes on a gRPC thread (or, rarely, inline): resuming is always posted.
      call(&ctx, req, &resp, [this, h, set, core](grpc::Status s) {
        status = std::move(s);
        set->post(core, [h] { h.resume(); });
      });
    }
    void await_resume() const noexcept {}
  };

  std::shared_ptr<grpc::Channel> channel(const std::string& endpoint);

  uint64_t default_timeout_ms_;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_;
};

}  // namespace tern::control
