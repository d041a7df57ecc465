#include "control/registration_service.h"

#include <grpcpp/grpcpp.h>

#include "tern/control/v1/registration.grpc.pb.h"

namespace tern::control {

namespace cv1 = ::tern::control::v1;

namespace {

class Service final : public cv1::RegistrationService::Service {
 public:
  Service(ReactorSet& rs, Agent& agent) : rs_(rs), agent_(agent) {}

  grpc::Status Register(grpc::ServerContext*, const cv1::RegisterRequest* req, cv1::RegisterReply* reply) override {
    Registration r;
    r.node = req->node();
    r.grpc_endpoint = req->grpc_endpoint();
    r.nvmf_endpoint = req->nvmf_endpoint();
    r.instance = req->instance_uuid();
    r.version = req->version();
    for (const auto& [k, v] : req->labels()) r.labels[k] = v;
    Status s = rs_.run_sync(0, [this, &r] { return agent_.on_register(r); });
    if (!s.ok()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(s.message()));
    reply->set_heartbeat_ms(uint32_t(agent_.options().heartbeat_ms));
    reply->set_agent(agent_.id());
    reply->set_leader(rs_.run_sync(0, [this] { return agent_.leading(); }));
    return grpc::Status::OK;
  }

  grpc::Status Deregister(grpc::ServerContext*, const cv1::DeregisterRequest* req, cv1::DeregisterReply*) override {
    rs_.run_sync(0, [this, req] { agent_.on_deregister(req->node(), req->instance_uuid()); });
    return grpc::Status::OK;
  }

 private:
  ReactorSet& rs_;
  Agent& agent_;
};

}  // namespace

Result<std::unique_ptr<RegistrationServer>> RegistrationServer::Start(ReactorSet& rs, Agent& agent, const std::string& endpoint) {
  std::unique_ptr<RegistrationServer> s(new RegistrationServer());
  s->service_ = std::make_unique<Service>(rs, agent);
  grpc::ServerBuilder b;
  b.AddListeningPort(endpoint, grpc::InsecureServerCredentials(), &s->port_);
  b.RegisterService(s->service_.get());
  s->server_ = b.BuildAndStart();
  if (!s->server_ || s->port_ == 0) return Status::Errorf(Errc::kInval, "gRPC endpoint {}: cannot listen there", endpoint);
  return s;
}

RegistrationServer::~RegistrationServer() { Stop(); }

void RegistrationServer::Stop() {
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
    server_.reset();
  }
}

}  // namespace tern::control
