// The io-engine's gRPC API (proto/tern/engine/v1): one object that owns the grpc::Server and the
// service implementations, each a thin adapter from a request message to an Engine operation.
//
// Threads: gRPC's own (synchronous server: one thread per call in flight, from gRPC's pool). A handler
// checks nothing itself; it runs the Engine operation on the primary reactor with run_sync — blocking
// only its gRPC thread — and maps the result (api/status_map.h). Reactors never wait for gRPC.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/result.h"

namespace grpc {
class Server;
class Service;
}  // namespace grpc

namespace tern::engine {

class Engine;

class GrpcServer {
 public:
  // Binds `endpoint` ("0.0.0.0:10124", "127.0.0.1:0" for a free port) and starts serving.
  static Result<std::unique_ptr<GrpcServer>> Start(Engine& engine, const std::string& endpoint);
  ~GrpcServer();
  // Stops taking calls; calls in flight get until `deadline_ms` to finish, then are cancelled.
  void Stop(int deadline_ms = 5000);
  int port() const { return port_; }

 private:
  GrpcServer() = default;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::unique_ptr<grpc::Service>> services_;
  int port_ = 0;
};

}  // namespace tern::engine
