#include "control/agent.h"

#include <cstdlib>

#include "common/log.h"
#include "reactor/reactor.h"

namespace tern::control {

namespace {

uint64_t now() { return Reactor::current()->now(); }

std::unique_ptr<Leadership> make_leadership(store::EtcdClient& etcd, const std::string& id, const AgentOptions& o,
                                            int64_t ttl) {
  auto l = Leadership::Create(etcd, {o.keys.leader(), id, ttl});
  if (!l.ok()) {
    TLOG_ERROR("control", "leadership: {}", l.status());
    std::abort();
  }
  return std::move(*l);
}

}  // namespace

Agent::Agent(store::EtcdClient& etcd, std::string id, AgentOptions opts)
    : etcd_(etcd),
      id_(std::move(id)),
      opts_(std::move(opts)),
      leadership_(make_leadership(etcd, id_, opts_, opts_.lease_ttl_s)),
      specs_(etcd, *leadership_, opts_.keys),
      registry_(opts_.node_deadline_ms),
      engines_(opts_.engine_timeout_ms),
      cluster_(specs_, registry_, engines_, opts_),
      pools_(cluster_),
      targets_(cluster_),
      volumes_(cluster_, pools_, targets_),
      snapshots_(cluster_),
      heal_(cluster_, volumes_, targets_),
      evacuation_(cluster_, volumes_, targets_, heal_),
      orphans_(cluster_) {
  if (const char* c = std::getenv("TERN_AGENT_CRASH_AT")) volumes_.crash_at = targets_.crash_at = snapshots_.crash_at = c;
  registry_.on_online([this](const std::string& node) {
    // A channel that saw the engine down may sit in gRPC's back-off and fail calls at once: start afresh.
    engines_.forget(registry_.endpoint(node));
    to_reconcile_.insert(node);
  });
  leadership_->on_lost([this](const Status& why) {
    TLOG_WARN("control", "agent {}: no longer leads ({}); stops acting and campaigns again", id_, why);
    leading_ = false;
    ++epoch_;
    specs_.invalidate();
  });
}

Agent::~Agent() = default;

void Agent::start() { scope_.spawn(run()); }

Task<void> Agent::stop() {
  stopping_ = true;
  leading_ = false;
  ++epoch_;
  co_await leadership_->stop();
  co_await scope_.close();
}

Task<void> Agent::run() {
  scope_.spawn(watchdog_loop());
  while (!stopping_) {
    Status s = co_await leadership_->campaign();
    if (stopping_) break;
    if (!s.ok()) {
      TLOG_WARN("control", "agent {}: campaign: {}", id_, s);
      co_await Reactor::sleep_for(500'000'000);
      continue;
    }
    co_await lead();
    // lead() returns when leadership is gone; wait for the lease's end to be noticed before campaigning.
    while (!stopping_ && leadership_->leading()) co_await Reactor::sleep_for(100'000'000);
  }
}

Task<void> Agent::lead() {
  ++epoch_;  // loops of an earlier term end
  Status s = co_await specs_.load();
  while (!s.ok() && leadership_->leading() && !stopping_) {
    TLOG_RL_WARN("control", 5000, "agent {}: loading the specs: {}; retrying", id_, s);
    co_await Reactor::sleep_for(500'000'000);
    s = co_await specs_.load();
  }
  if (!leadership_->leading() || stopping_) co_return;
  leading_ = true;
  TLOG_INFO("control", "agent {} leads (term {}): {} node(s), {} pool(s), {} volume(s), {} replica(s) in the specs",
            id_, leadership_->term(), specs_.nodes.size(), specs_.pools.size(), specs_.volumes.size(),
            specs_.replicas.size());
  // A new leader may not have heard from every node yet (it just started): requests and reconciles
  // wait (require_leader, below) until every node in the specs has registered or a node deadline
  // passed — the silence after which any node is judged — so that no node is taken for offline only
  // because its heartbeat has not come yet.
  grace_until_ = now() + opts_.node_deadline_ms * 1'000'000;
  co_await await_nodes();
  // Nodes that registered while this agent was a standby: record their specs, reconcile them.
  for (const auto& [node, l] : registry_.all()) {
    if (l.online) to_reconcile_.insert(node);
  }
  scope_.spawn(poll_loop());
  co_await reconcile_loop();
}

Task<void> Agent::watchdog_loop() {
  while (!stopping_) {
    co_await Reactor::sleep_for(200'000'000);
    for (const std::string& node : registry_.overdue(now())) {
      std::string ep = cluster_.endpoint(node);
      ev1::Empty req;
      auto r = co_await engines_.call<ev1::NodeService>(ep, &ev1::NodeService::Stub::async::GetNodeInfo, req, 1000);
      if (r.ok()) {
        registry_.touch(node, now());
      } else {
        registry_.set_offline(node, fmt::format("no heartbeat for {} ms and the probe failed: {}",
                                                opts_.node_deadline_ms, r.status().message()));
      }
    }
  }
}

Task<void> Agent::poll_loop() {
  const uint64_t epoch = epoch_;
  while (!stopping_ && leading_ && epoch == epoch_) {
    for (const auto& [node, l] : registry_.all()) {
      if (l.online) co_await pools_.refresh(node);
      if (!leading_ || epoch != epoch_) co_return;
    }
    co_await Reactor::sleep_for(opts_.poll_ms * 1'000'000);
  }
}

Task<void> Agent::reconcile_loop() {
  const uint64_t epoch = epoch_;
  uint64_t next = 0;
  while (!stopping_ && leading_ && epoch == epoch_) {
    if (!to_reconcile_.empty() || now() >= next) {
      co_await reconcile_pass();
      next = now() + opts_.reconcile_ms * 1'000'000;
    }
    co_await Reactor::sleep_for(50'000'000);
  }
}

Task<void> Agent::reconcile_pass() {
  ++reconcile_passes_;
  // Nodes that came online or restarted: their specs, then their pools.
  std::set<std::string> nodes;
  nodes.swap(to_reconcile_);
  for (const std::string& node : nodes) {
    const NodeLiveness* l = registry_.get(node);
    if (!l || !l->online) continue;
    co_await pools_.reconcile_node(node);
    if (!leading_) co_return;
  }
  co_await volumes_.reconcile();
  if (!leading_) co_return;
  co_await snapshots_.reconcile();
  if (!leading_) co_return;
  co_await targets_.reconcile();
  if (!leading_) co_return;
  co_await heal_.reconcile();
  if (!leading_) co_return;
  co_await evacuation_.reconcile();
  if (!leading_) co_return;
  co_await orphans_.reconcile();
}

Task<Status> Agent::on_register(Registration r) {
  if (Status s = check_name("node", r.node); !s.ok()) co_return s;
  if (r.grpc_endpoint.empty()) co_return Status(Errc::kInval, "grpc_endpoint: required");
  if (r.instance.empty()) co_return Status(Errc::kInval, "instance_uuid: required");
  const NodeSpec* known = nullptr;
  if (leading_) {
    auto it = specs_.nodes.find(r.node);
    if (it != specs_.nodes.end()) known = &it->second;
  }
  NodeSpec spec;
  bool write = registry_.on_register(r, known, &spec, now());
  if (write && leading_) {
    engines_.forget(spec.grpc_endpoint);
    auto b = specs_.batch();
    b.put(spec);
    if (Status s = co_await specs_.commit(std::move(b)); !s.ok()) {
      TLOG_RL_WARN("control", 5000, "node {}: recording its spec: {}", r.node, s);
      to_reconcile_.insert(r.node);  // retried by the next pass
    }
  }
  co_return Status::Ok();
}

void Agent::on_deregister(const std::string& node, const std::string& instance) {
  registry_.on_deregister(node, instance, now());
}

Task<void> Agent::await_nodes() {
  while (leading_ && now() < grace_until_) {
    bool all = true;
    for (const auto& [node, spec] : specs_.nodes) all &= registry_.get(node) != nullptr;
    if (all) break;
    co_await Reactor::sleep_for(20'000'000);
  }
}

Task<Status> Agent::require_leader() {
  if (leading_) {
    co_await await_nodes();
    if (leading_) co_return Status::Ok();
  }
  auto l = co_await leadership_->leader();
  if (l.ok()) co_return Status::Errorf(Errc::kConnRefused, "agent {} is a standby; {} leads", id_, *l);
  co_return Status::Errorf(Errc::kConnRefused, "agent {} is a standby and no agent leads yet", id_);
}

Task<AgentStatus> Agent::status() {
  AgentStatus s;
  s.id = id_;
  s.leading = leading_;
  s.term = leadership_->term();
  auto l = co_await leadership_->leader();
  if (l.ok()) s.leader = *l;
  s.reconcile_passes = reconcile_passes_;
  s.orphans_collected = orphans_.collected();
  s.rebuilds = heal_.rebuilds_seen();
  co_return s;
}

Task<Result<NodeSpec>> Agent::cordon(std::string node, std::string label, bool on) {
  if (Status s = co_await require_leader(); !s.ok()) co_return s;
  auto it = specs_.nodes.find(node);
  if (it == specs_.nodes.end()) co_return Status::Errorf(Errc::kNoEnt, "node '{}' has never registered", node);
  if (label.empty()) co_return Status(Errc::kInval, "cordon label: required");
  NodeSpec s = it->second;
  auto pos = std::find(s.cordons.begin(), s.cordons.end(), label);
  if (on == (pos != s.cordons.end())) co_return s;
  if (on) {
    s.cordons.push_back(label);
  } else {
    s.cordons.erase(pos);
  }
  auto b = specs_.batch();
  b.put(s);
  if (Status st = co_await specs_.commit(std::move(b)); !st.ok()) co_return st;
  TLOG_INFO("control", "node {} {} ({})", node, on ? "cordoned" : "uncordoned", label);
  co_return s;
}

Task<Result<NodeSpec>> Agent::drain(std::string node, std::string label, bool replicas) {
  auto c = co_await cordon(node, label, true);
  if (!c.ok()) co_return c.status();
  NodeSpec s = *c;
  if (!s.draining || (replicas && !s.evacuating)) {
    s.draining = true;
    s.evacuating |= replicas;
    auto b = specs_.batch();
    b.put(s);
    if (Status st = co_await specs_.commit(std::move(b)); !st.ok()) co_return st;
  }
  std::vector<std::pair<std::string, TargetSpec>> here;
  for (const auto& [id, v] : specs_.volumes) {
    if (v.target && v.target->node == node) here.emplace_back(id, *v.target);
  }
  std::string stuck;
  for (const auto& [id, t] : here) {
    PublishArgs a;
    a.protocol = t.protocol;
    a.allowed_hosts = t.allowed_hosts;
    a.republish = true;
    auto r = co_await targets_.publish(id, a);
    if (!r.ok()) {
      stuck += fmt::format("{}{}: {}", stuck.empty() ? "" : "; ", id, r.status().message());
    } else {
      TLOG_INFO("control", "drain of {}: volume {} moved to {}", node, id, r->target->node);
    }
  }
  if (!stuck.empty()) co_return Status::Errorf(Errc::kBusy, "node {} is cordoned, but some volumes could not move: {}", node, stuck);
  auto it = specs_.nodes.find(node);
  if (it == specs_.nodes.end()) co_return Status::Errorf(Errc::kNoEnt, "node '{}' has never registered", node);
  NodeSpec done = it->second;
  if (done.evacuating) {
    // The replicas follow, pass by pass (evacuate.h); draining ends with the last.
    TLOG_INFO("control", "node {}: {} volume target(s) moved; its replicas are being moved (it stays cordoned: {})", node,
              here.size(), label);
    co_return done;
  }
  done.draining = false;
  auto b = specs_.batch();
  b.put(done);
  if (Status st = co_await specs_.commit(std::move(b)); !st.ok()) co_return st;
  TLOG_INFO("control", "node {} drained ({} volume target(s) moved); it stays cordoned ({})", node, here.size(), label);
  co_return done;
}

}  // namespace tern::control
