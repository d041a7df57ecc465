// AgentPools: the agent's pools as the DiskPool operator (src/kube) sees them: each call enters the agent's
// reactor (run_sync) and answers what the REST API would (GET/PUT/DELETE /v1/pools/{name}); kAgain when
// this agent does not lead.
//
// Threads: called from the operator's thread; never from a reactor.
#pragma once

#include "control/agent.h"
#include "kube/diskpool_operator.h"
#include "reactor/reactor_set.h"

namespace tern::control {

class AgentPools : public kube::PoolBackend {
 public:
  AgentPools(ReactorSet& rs, Agent& agent) : rs_(rs), agent_(agent) {}

  bool leading() override;
  Result<kube::PoolView> get(const std::string& name) override;
  Result<kube::PoolView> declare(const std::string& name, const std::string& node, const std::string& disk,
                                 const std::map<std::string, std::string>& labels) override;
  Status destroy(const std::string& name, const std::string& node, const std::string& disk) override;

 private:
  ReactorSet& rs_;
  Agent& agent_;
};

}  // namespace tern::control
