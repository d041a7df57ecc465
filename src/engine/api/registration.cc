#include "engine/api/registration.h"

#include <grpcpp/grpcpp.h>

#include <chrono>

#include "common/log.h"
#include "tern/control/v1/registration.grpc.pb.h"

namespace tern::engine {

namespace cv1 = ::tern::control::v1;

Result<std::unique_ptr<Registration>> Registration::Start(std::vector<std::string> agents, RegistrationInfo info) {
  if (agents.empty()) return Status(Errc::kInval, "registration: no agent given");
  std::unique_ptr<Registration> r(new Registration());
  r->agents_ = std::move(agents);
  r->info_ = std::move(info);
  r->thread_ = std::thread([p = r.get()] { p->run(); });
  return r;
}

Registration::~Registration() { Stop(); }

uint64_t Registration::accepted() const {
  std::lock_guard<std::mutex> l(mu_);
  return accepted_;
}

void Registration::run() {
  struct Agent {
    std::string endpoint;
    std::unique_ptr<cv1::RegistrationService::Stub> stub;
    bool reached = false;  // for logging the first success and failures once
  };
  std::vector<Agent> agents;
  // A restarted agent is reached within a fraction of a second, not after gRPC's default back-off
  // (which grows to minutes): a new leader waits for the nodes to register before judging them.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  for (const std::string& e : agents_) {
    agents.push_back({e, cv1::RegistrationService::NewStub(grpc::CreateCustomChannel(e, grpc::InsecureChannelCredentials(), args))});
  }
  cv1::RegisterRequest req;
  req.set_node(info_.node);
  req.set_grpc_endpoint(info_.grpc_endpoint);
  req.set_nvmf_endpoint(info_.nvmf_endpoint);
  req.set_instance_uuid(info_.instance_uuid);
  req.set_version(info_.version);
  req.set_api_version("v1");
  for (const auto& [k, v] : info_.labels) (*req.mutable_labels())[k] = v;
  uint32_t period_ms = 1000;
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    l.unlock();
    uint32_t next = 0;
    uint64_t ok = 0;
    for (Agent& a : agents) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
      ctx.set_wait_for_ready(true);  // a connection coming up within the deadline is waited for
      cv1::RegisterReply reply;
      grpc::Status s = a.stub->Register(&ctx, req, &reply);
      if (s.ok()) {
        ++ok;
        if (!a.reached) TLOG_INFO("engine", "registered with the agent at {} ({}{})", a.endpoint, reply.agent(), reply.leader() ? ", the leader" : "");
        a.reached = true;
        if (reply.heartbeat_ms() > 0 && (next == 0 || reply.heartbeat_ms() < next)) next = reply.heartbeat_ms();
      } else {
        if (a.reached) TLOG_WARN("engine", "the agent at {} does not answer: {}", a.endpoint, s.error_message());
        a.reached = false;
      }
    }
    if (next > 0) period_ms = std::max<uint32_t>(100, next);
    l.lock();
    accepted_ += ok;
    cv_.wait_for(l, std::chrono::milliseconds(period_ms), [this] { return stop_; });
  }
  l.unlock();
  cv1::DeregisterRequest d;
  d.set_node(info_.node);
  d.set_instance_uuid(info_.instance_uuid);
  for (Agent& a : agents) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
    cv1::DeregisterReply reply;
    grpc::Status s = a.stub->Deregister(&ctx, d, &reply);
    if (!s.ok() && a.reached) TLOG_WARN("engine", "deregistering from the agent at {}: {}", a.endpoint, s.error_message());
  }
}

void Registration::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace tern::engine
