#include "agent_pools.h"

#include "control/rest_api.h"

namespace tern::control {

namespace {

// What every call needs first: this agent leads (kAgain otherwise: the operator then leaves it to the
// leader) and has the specs.
Task<Status> ready(Agent& a) {
  if (Status s = co_await a.require_leader(); !s.ok()) co_return Status(Errc::kAgain, std::string(s.message()));
  co_return co_await a.specs().ensure_loaded();
}

}  // namespace

bool AgentPools::leading() {
  return rs_.run_sync(0, [this] { return agent_.leading(); });
}

Result<kube::PoolView> AgentPools::get(const std::string& name) {
  return rs_.run_sync(0, [this, &name]() -> Task<Result<kube::PoolView>> {
    if (Status s = co_await ready(agent_); !s.ok()) co_return s;
    const PoolSpec* p = agent_.cluster().specs.pool(name);
    if (!p) co_return Status::Errorf(Errc::kNoEnt, "pool '{}' is not declared", name);
    co_return kube::PoolView::FromJson(pool_json(*p, agent_.cluster()));
  });
}

Result<kube::PoolView> AgentPools::declare(const std::string& name, const std::string& node, const std::string& disk,
                                           const std::map<std::string, std::string>& labels) {
  return rs_.run_sync(0, [&]() -> Task<Result<kube::PoolView>> {
    if (Status s = co_await ready(agent_); !s.ok()) co_return s;
    auto r = co_await agent_.pools().declare(name, node, disk, labels);
    if (!r.ok()) co_return r.status();
    co_return kube::PoolView::FromJson(pool_json(*r, agent_.cluster()));
  });
}

Status AgentPools::destroy(const std::string& name, const std::string& node, const std::string& disk) {
  return rs_.run_sync(0, [&]() -> Task<Status> {
    if (Status s = co_await ready(agent_); !s.ok()) co_return s;
    // Checked and destroyed in one step on the reactor: nothing can redeclare the name in between.
    const PoolSpec* p = agent_.cluster().specs.pool(name);
    if (!p) co_return Status::Errorf(Errc::kNoEnt, "pool '{}' is not declared", name);
    if (p->node != node || p->disk != disk) {
      co_return Status::Errorf(Errc::kExist, "pool '{}' is on node {} with disk {}", name, p->node, p->disk);
    }
    co_return co_await agent_.pools().destroy(name, false);
  });
}

}  // namespace tern::control
