// RegistrationServer: the agent's gRPC endpoint for io-engines (proto/tern/control/v1/registration.proto).
//
// Threads: gRPC's; each call enters the agent's reactor with run_sync.
#pragma once

#include <memory>
#include <string>

#include "common/result.h"
#include "control/agent.h"
#include "reactor/reactor_set.h"

namespace grpc {
class Server;
class Service;
}  // namespace grpc

namespace tern::control {

class RegistrationServer {
 public:
  static Result<std::unique_ptr<RegistrationServer>> Start(ReactorSet& rs, Agent& agent, const std::string& endpoint);
  ~RegistrationServer();
  void Stop();
  int port() const { return port_; }

 private:
  RegistrationServer() = default;
  std::unique_ptr<grpc::Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace tern::control
