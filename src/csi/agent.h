// tern-csi's view of the core agent: its REST API through restclient (every agent given, moving on from a
// standby's 503), and the mapping of the agent's answers to the gRPC status codes the CSI specification
// asks for. Threads: any; a call blocks its caller (one of gRPC's handler threads).
#pragma once

#include <grpcpp/support/status.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "restclient/rest_client.h"

namespace tern::csi {

struct AgentOptions {
  std::vector<std::string> urls;  // every agent: http://host:port or https://host:port
  std::string ca_file;            // the agents' CA (https)
  double timeout_s = 120;         // one REST call: a volume's creation waits for its replicas
};

class Agent {
 public:
  explicit Agent(AgentOptions o) : o_(std::move(o)) {}

  // One call. `reply` gets the answer whatever its HTTP status; the returned status is not OK only when no
  // agent could be reached (UNAVAILABLE, naming each agent and why).
  grpc::Status call(const std::string& method, const std::string& path, const nlohmann::json* body,
                    rest::RestReply* reply) const;
  // The call, with any answer outside `ok` statuses turned into a gRPC status (status_for).
  grpc::Status expect(const std::string& method, const std::string& path, const nlohmann::json* body,
                      std::initializer_list<int> ok, rest::RestReply* reply, const std::string& what) const;

  // The agent's answer as a CSI error: 400 INVALID_ARGUMENT, 404 NOT_FOUND, 409 ALREADY_EXISTS (EEXIST)
  // or ABORTED (an operation on the object in progress), 503 UNAVAILABLE, 507 RESOURCE_EXHAUSTED, else
  // INTERNAL. `what` leads the message ("creating volume pvc-1").
  static grpc::Status status_for(const rest::RestReply& r, const std::string& what);

 private:
  AgentOptions o_;
};

}  // namespace tern::csi
