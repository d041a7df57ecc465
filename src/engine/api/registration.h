// Registration: the engine announces itself to the core agents (proto/tern/control/v1/registration.proto)
// and heartbeats, so the control plane knows it is alive; on a clean stop it deregisters, so the agent
// marks it offline at once instead of after its deadline.
//
// Threads: its own. Every period it sends Register to every agent (each call with a deadline of one
// second, so a dead agent costs no more); the period is what the agents answer (heartbeat_ms), 1 s until
// one answers. Stop() deregisters (best effort, 1 s) and joins. The engine's state is not touched: what
// it sends was given at Start.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"

namespace tern::engine {

struct RegistrationInfo {
  std::string node;
  std::string grpc_endpoint;  // reachable by the agent
  std::string nvmf_endpoint;
  std::string instance_uuid;
  std::string version;
  std::map<std::string, std::string> labels;
};

class Registration {
 public:
  // `agents`: host:port each. kInval for an empty list.
  static Result<std::unique_ptr<Registration>> Start(std::vector<std::string> agents, RegistrationInfo info);
  ~Registration();  // Stop()
  void Stop();
  // Registrations answered so far (for logs and tests).
  uint64_t accepted() const;

 private:
  Registration() = default;
  void run();

  std::vector<std::string> agents_;
  RegistrationInfo info_;
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  uint64_t accepted_ = 0;
};

}  // namespace tern::engine
