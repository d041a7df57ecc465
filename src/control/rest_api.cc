#include "control/rest_api.h"

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "common/uuid.h"
#include "nexus/rebuild.h"
#include "nexus/record.h"
#include "reactor/reactor.h"

namespace tern::control {

using json = nlohmann::json;

int http_status(Errc e) {
  switch (e) {
    case Errc::kOk: return 200;
    case Errc::kInval:
    case Errc::kRange:
    case Errc::kNotSup: return 400;
    case Errc::kNoEnt: return 404;
    case Errc::kExist:
    case Errc::kBusy:
    case Errc::kAgain:
    case Errc::kCorruption: return 409;
    case Errc::kNoSpc: return 507;
    case Errc::kConnRefused:
    case Errc::kAccess:
    case Errc::kShutdown:
    case Errc::kTimedOut: return 503;
    default: return 500;
  }
}

HttpReply problem_reply(const Status& s) {
  return problem(http_status(s.code()), s.message(), errc_name(s.code()));
}

namespace {

HttpReply ok_json(const json& j, int status = 200) {
  HttpReply r;
  r.status = status;
  r.body = j.dump();
  return r;
}

HttpReply no_content() {
  HttpReply r;
  r.status = 204;
  return r;
}

HttpReply bad(std::string_view what) { return problem_reply(Status(Errc::kInval, std::string(what))); }

std::vector<std::string> split_path(std::string_view p) {
  std::vector<std::string> out;
  while (!p.empty()) {
    if (p.front() == '/') {
      p.remove_prefix(1);
      continue;
    }
    size_t s = p.find('/');
    auto seg = url_decode(p.substr(0, s));
    out.push_back(seg.ok() ? *seg : std::string(p.substr(0, s)));
    p = s == std::string_view::npos ? std::string_view() : p.substr(s);
  }
  return out;
}

json labels_json(const Labels& l) {
  json o = json::object();
  for (const auto& [k, v] : l) o[k] = v;
  return o;
}

json node_json(const NodeSpec& n, const NodeLiveness* l) {
  json j = {{"id", n.id},
            {"grpc_endpoint", n.grpc_endpoint},
            {"nvmf_endpoint", n.nvmf_endpoint},
            {"labels", labels_json(n.labels)},
            {"cordons", n.cordons},
            {"draining", n.draining},
            {"evacuating", n.evacuating},
            {"status", l ? (l->online ? "online" : "offline") : "unknown"}};
  if (l) {
    j["instance"] = l->instance;
    j["version"] = l->version;
    if (!l->online && !l->offline_reason.empty()) j["reason"] = l->offline_reason;
  }
  return j;
}

std::string pool_status(const PoolSpec& p, const Cluster& c) {
  if (p.state != SpecState::kCreated) return std::string(spec_state_name(p.state));
  if (!c.registry.online(p.node)) return "offline";
  auto st = c.pools.find(p.name);
  if (st == c.pools.end() || st->second.seen_ns == 0) return "unknown";
  if (!st->second.found) return "missing";
  return st->second.state;
}

}  // namespace

json pool_json(const PoolSpec& p, const Cluster& c) {
  json j = {{"name", p.name},
            {"node", p.node},
            {"disk", p.disk},
            {"labels", labels_json(p.labels)},
            {"state", spec_state_name(p.state)},
            {"status", pool_status(p, c)},
            {"replicas", c.specs.replicas_in(p.name).size()}};
  size_t snaps = 0;
  for (const auto& [id, sn] : c.specs.snapshots) {
    for (const SnapshotSpec::Part& part : sn.parts) snaps += part.pool == p.name;
  }
  j["snapshots"] = snaps;
  auto st = c.pools.find(p.name);
  if (st != c.pools.end() && st->second.found) {
    j["capacity"] = st->second.capacity;
    j["used"] = st->second.used;
    j["committed"] = st->second.committed;
  }
  if (st != c.pools.end() && !st->second.reason.empty()) j["reason"] = st->second.reason;
  if (p.state == SpecState::kCreating && !c.registry.online(p.node)) {
    j["reason"] = fmt::format("node {} is offline; the pool is created when it returns", p.node);
  }
  return j;
}

namespace {

const char* nexus_state_name(ev1::NexusState s) {
  switch (s) {
    case ev1::NEXUS_STATE_ONLINE: return "online";
    case ev1::NEXUS_STATE_DEGRADED: return "degraded";
    case ev1::NEXUS_STATE_FAULTED: return "faulted";
    case ev1::NEXUS_STATE_SHUTTING_DOWN: return "shutting_down";
    case ev1::NEXUS_STATE_SHUTDOWN: return "shutdown";
    default: return "unknown";
  }
}

const char* child_state_name(ev1::ChildState s) {
  switch (s) {
    case ev1::CHILD_STATE_ONLINE: return "online";
    case ev1::CHILD_STATE_FAULTED: return "faulted";
    default: return "unknown";
  }
}

json nexus_json(const ev1::Nexus& n) {
  json kids = json::array();
  for (const ev1::Child& ch : n.children()) {
    json k = {{"uuid", ch.uuid()}, {"state", child_state_name(ch.state())}, {"synced", ch.synced()}, {"local", ch.local()}};
    if (ch.has_rebuild()) {
      const ev1::Rebuild& r = ch.rebuild();
      const char* st = r.state() == ev1::REBUILD_STATE_RUNNING     ? "running"
                       : r.state() == ev1::REBUILD_STATE_PAUSED    ? "paused"
                       : r.state() == ev1::REBUILD_STATE_COMPLETED ? "completed"
                       : r.state() == ev1::REBUILD_STATE_FAILED    ? "failed"
                       : r.state() == ev1::REBUILD_STATE_STOPPED   ? "stopped"
                                                                     : "unknown";
      k["rebuild"] = {{"kind", r.kind()},           {"state", st},
                      {"total_bytes", r.total_bytes()}, {"done_bytes", r.done_bytes()},
                      {"copied_bytes", r.copied_bytes()}, {"bytes_per_s", r.bytes_per_s()}};
    }
    kids.push_back(std::move(k));
  }
  return {{"state", nexus_state_name(n.state())}, {"generation", n.generation()}, {"children", kids}};
}

json replica_json(const ReplicaSpec& r, const Cluster& c) {
  json j = {{"uuid", r.uuid},
            {"volume", r.volume},
            {"pool", r.pool},
            {"node", r.node},
            {"size", r.size},
            {"thin", r.thin},
            {"state", spec_state_name(r.state)},
            {"status", c.registry.online(r.node) ? "online" : "offline"}};
  if (!r.clone_of.empty()) j["clone_of"] = r.clone_of;
  return j;
}

json snapshot_json(const SnapshotSpec& s, const Cluster& c) {
  json parts = json::array();
  size_t online = 0;
  for (const SnapshotSpec::Part& p : s.parts) {
    bool up = c.registry.online(p.node);
    online += up;
    parts.push_back({{"uuid", p.uuid}, {"replica", p.replica}, {"pool", p.pool}, {"node", p.node}, {"status", up ? "online" : "offline"}});
  }
  size_t clones = 0;
  for (const auto& [id, r] : c.specs.replicas) {
    for (const SnapshotSpec::Part& p : s.parts) clones += r.clone_of == p.uuid;
  }
  std::string status = s.state != SpecState::kCreated ? std::string(spec_state_name(s.state))
                       : online == s.parts.size()     ? "online"
                       : online > 0                   ? "degraded"
                                                      : "offline";
  return {{"uuid", s.uuid},
          {"volume", s.volume},
          {"name", s.name},
          {"size", s.size},
          {"created_unix_s", s.created_unix_s},
          {"state", spec_state_name(s.state)},
          {"status", status},
          {"volume_exists", c.specs.volume(s.volume) != nullptr},
          {"clones", clones},
          {"parts", parts}};
}

json volume_json(const VolumeSpec& v, const Cluster& c) {
  json reps = json::array();
  size_t online = 0;
  for (const std::string& id : v.replica_ids) {
    auto it = c.specs.replicas.find(id);
    if (it == c.specs.replicas.end()) continue;
    json r = replica_json(it->second, c);
    if (r["status"] == "online") ++online;
    reps.push_back(std::move(r));
  }
  std::string status;
  if (v.state != SpecState::kCreated) {
    status = std::string(spec_state_name(v.state));
  } else if (online >= v.replicas) {
    status = "online";
  } else {
    status = online > 0 ? "degraded" : "offline";
  }
  json j = {{"uuid", v.uuid},
            {"size", v.size},
            {"replicas", v.replicas},
            {"thin", v.thin},
            {"state", spec_state_name(v.state)},
            {"status", status},
            {"labels", labels_json(v.labels)},
            {"topology",
             {{"node_labels", labels_json(v.topology.node_labels)},
              {"pool_labels", labels_json(v.topology.pool_labels)},
              {"spread", v.topology.spread}}},
            {"replica_details", reps},
            {"max_snapshots", v.max_snapshots},
            {"rebuild_rate_bytes_per_s", v.rebuild_rate}};
  if (!v.source_snapshot.empty()) j["source_snapshot"] = v.source_snapshot;
  if (v.target) {
    j["target"] = {{"node", v.target->node},
                   {"protocol", v.target->protocol},
                   {"uri", v.target->uri},
                   {"allowed_hosts", v.target->allowed_hosts},
                   {"generation", v.target->generation},
                   {"state", target_state_name(v.target->state)}};
  }
  return j;
}

// Reads a JSON object body; unknown fields are refused (a typo must not be silently ignored).
Result<json> body_object(const HttpCall& call, std::initializer_list<const char*> fields) {
  if (call.body.empty()) return Status(Errc::kInval, "a JSON object body is required");
  json j = json::parse(call.body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status(Errc::kInval, "the body is not a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
    for (const char* f : fields) known |= it.key() == f;
    if (!known) {
      std::string list;
      for (const char* f : fields) list += fmt::format("{}{}", list.empty() ? "" : ", ", f);
      return Status::Errorf(Errc::kInval, "'{}' is not a field here (fields: {})", it.key(), list);
    }
  }
  return j;
}

Result<Labels> labels_field(const json& j, const char* f) {
  Labels out;
  auto it = j.find(f);
  if (it == j.end() || it->is_null()) return out;
  if (!it->is_object()) return Status::Errorf(Errc::kInval, "'{}': an object of strings", f);
  for (auto e = it->begin(); e != it->end(); ++e) {
    if (!e.value().is_string()) return Status::Errorf(Errc::kInval, "'{}.{}': a string", f, e.key());
    out[e.key()] = e.value().get<std::string>();
  }
  return out;
}

Result<CreateVolumeArgs> volume_args(const std::string& uuid, const HttpCall& call) {
  auto j = body_object(call, {"size", "replicas", "thin", "topology", "labels", "snapshot"});
  if (!j.ok()) return j.status();
  CreateVolumeArgs a;
  a.uuid = uuid;
  if (auto sn = j->find("snapshot"); sn != j->end() && !sn->is_null()) {
    if (!sn->is_string()) return Status(Errc::kInval, "'snapshot': the UUID of the snapshot to restore");
    a.snapshot = sn->get<std::string>();
  }
  auto size = j->find("size");
  if (size != j->end() && !size->is_number_unsigned()) return Status(Errc::kInval, "'size': bytes, a positive integer");
  if (size == j->end() && a.snapshot.empty()) return Status(Errc::kInval, "'size': bytes, a positive integer (required)");
  if (size != j->end()) a.size = size->get<uint64_t>();
  if (auto r = j->find("replicas"); r != j->end()) {
    if (!r->is_number_unsigned()) return Status(Errc::kInval, "'replicas': an integer from 1 to 8");
    a.replicas = uint32_t(std::min<uint64_t>(r->get<uint64_t>(), 1000));
  }
  if (auto t = j->find("thin"); t != j->end()) {
    if (!t->is_boolean()) return Status(Errc::kInval, "'thin': true or false");
    a.thin = t->get<bool>();
  }
  auto labels = labels_field(*j, "labels");
  if (!labels.ok()) return labels.status();
  a.labels = *labels;
  if (auto t = j->find("topology"); t != j->end() && !t->is_null()) {
    if (!t->is_object()) return Status(Errc::kInval, "'topology': an object");
    for (auto it = t->begin(); it != t->end(); ++it) {
      if (it.key() != "node_labels" && it.key() != "pool_labels" && it.key() != "spread") {
        return Status::Errorf(Errc::kInval, "'topology.{}' is not a field (node_labels, pool_labels, spread)", it.key());
      }
    }
    auto nl = labels_field(*t, "node_labels");
    if (!nl.ok()) return nl.status();
    auto pl = labels_field(*t, "pool_labels");
    if (!pl.ok()) return pl.status();
    a.topology.node_labels = *nl;
    a.topology.pool_labels = *pl;
    if (auto s = t->find("spread"); s != t->end() && !s->is_null()) {
      if (!s->is_array()) return Status(Errc::kInval, "'topology.spread': an array of node label keys");
      for (const json& k : *s) {
        if (!k.is_string()) return Status(Errc::kInval, "'topology.spread': an array of node label keys");
        a.topology.spread.push_back(k.get<std::string>());
      }
    }
  }
  return a;
}

std::string metrics_text(const Cluster& c, const AgentStatus& st) {
  std::string out;
  out += "# HELP tern_agent_leader 1 when this agent leads.\n# TYPE tern_agent_leader gauge\n";
  out += fmt::format("tern_agent_leader{{agent=\"{}\"}} {}\n", st.id, st.leading ? 1 : 0);
  out += "# HELP tern_agent_reconcile_passes_total Reconcile passes run while leading.\n# TYPE tern_agent_reconcile_passes_total counter\n";
  out += fmt::format("tern_agent_reconcile_passes_total {}\n", st.reconcile_passes);
  out += "# HELP tern_agent_orphans_collected_total Pool objects no spec named, destroyed.\n# TYPE tern_agent_orphans_collected_total counter\n";
  out += fmt::format("tern_agent_orphans_collected_total {}\n", st.orphans_collected);
  if (st.leading) {
    out += "# HELP tern_rebuilds Rebuilds running or paused in the cluster (at the last heal pass).\n# TYPE tern_rebuilds gauge\n";
    out += fmt::format("tern_rebuilds {}\n", st.rebuilds);
  }
  size_t online = 0, offline = 0;
  for (const auto& [n, l] : c.registry.all()) (l.online ? online : offline)++;
  out += "# HELP tern_nodes Engines known to this agent, by status.\n# TYPE tern_nodes gauge\n";
  out += fmt::format("tern_nodes{{status=\"online\"}} {}\ntern_nodes{{status=\"offline\"}} {}\n", online, offline);
  if (st.leading) {
    std::map<std::string, size_t> by;
    for (const auto& [id, v] : c.specs.volumes) by[volume_json(v, c)["status"].get<std::string>()]++;
    out += "# HELP tern_volumes Volumes by status.\n# TYPE tern_volumes gauge\n";
    for (const char* s : {"online", "degraded", "offline", "creating", "deleting"}) {
      out += fmt::format("tern_volumes{{status=\"{}\"}} {}\n", s, by[s]);
    }
    out += "# HELP tern_pools Pools declared.\n# TYPE tern_pools gauge\n";
    out += fmt::format("tern_pools {}\n", c.specs.pools.size());
    out += "# HELP tern_snapshots Volume snapshots.\n# TYPE tern_snapshots gauge\n";
    out += fmt::format("tern_snapshots {}\n", c.specs.snapshots.size());
  }
  return out;
}

}  // namespace

HttpReply RestApi::handle(const HttpCall& call) {
  if (call.path == "/v1/openapi.json" && (call.method == "GET" || call.method == "HEAD")) {
    HttpReply r;
    r.body = kOpenApiJson;
    return r;
  }
  return rs_.run_sync(0, [this, &call] { return route(call); });
}

Task<HttpReply> RestApi::route(HttpCall call) {
  auto seg = split_path(call.path);
  const std::string& m = call.method;
  bool get = m == "GET" || m == "HEAD";
  auto method_not_allowed = [&](const char* allowed) {
    HttpReply r = problem(405, fmt::format("{} is not allowed on {} (allowed: {})", m, call.path, allowed), "EINVAL");
    r.headers.push_back({"Allow", allowed});
    return r;
  };
  if (seg.size() == 1 && seg[0] == "metrics" && get) {
    AgentStatus st = co_await agent_.status();
    HttpReply r;
    r.content_type = "text/plain; version=0.0.4";
    r.body = metrics_text(agent_.cluster(), st);
    co_return r;
  }
  if (seg.empty() || seg[0] != "v1") co_return problem_reply(Status::Errorf(Errc::kNoEnt, "no such path: {}", call.path));
  seg.erase(seg.begin());
  if (seg.size() == 1 && seg[0] == "cluster") {
    if (!get) co_return method_not_allowed("GET");
    AgentStatus st = co_await agent_.status();
    co_return ok_json({{"agent", st.id}, {"leading", st.leading}, {"leader", st.leader}, {"term", st.term}});
  }
  // Everything else needs the leader's state.
  if (Status s = co_await agent_.require_leader(); !s.ok()) co_return problem_reply(s);
  if (Status s = co_await agent_.specs().ensure_loaded(); !s.ok()) co_return problem_reply(s);
  Cluster& c = agent_.cluster();
  const std::string kind = seg.empty() ? "" : seg[0];

  if (kind == "nodes") {
    if (seg.size() == 1) {
      if (!get) co_return method_not_allowed("GET");
      json a = json::array();
      for (const auto& [id, n] : c.specs.nodes) a.push_back(node_json(n, c.registry.get(id)));
      co_return ok_json(a);
    }
    auto it = c.specs.nodes.find(seg[1]);
    if (seg.size() == 2) {
      if (!get) co_return method_not_allowed("GET");
      if (it == c.specs.nodes.end()) co_return problem_reply(Status::Errorf(Errc::kNoEnt, "node '{}' has never registered", seg[1]));
      co_return ok_json(node_json(it->second, c.registry.get(seg[1])));
    }
    if (seg.size() == 4 && seg[2] == "drain") {
      if (m != "PUT") co_return method_not_allowed("PUT");
      auto q = parse_query(call.query);
      bool replicas = q.count("replicas") && (q["replicas"] == "true" || q["replicas"] == "1");
      if (q.count("replicas") && !replicas && q["replicas"] != "false" && q["replicas"] != "0") {
        co_return bad(fmt::format("replicas '{}': true or false", q["replicas"]));
      }
      auto r = co_await agent_.drain(seg[1], seg[3], replicas);
      if (!r.ok()) co_return problem_reply(r.status());
      json j = node_json(*r, c.registry.get(seg[1]));
      size_t held = 0;
      for (const auto& [id, rep] : c.specs.replicas) held += rep.node == seg[1] && rep.state != SpecState::kDeleting;
      j["replicas"] = held;
      co_return ok_json(j, r->evacuating ? 202 : 200);
    }
    if (seg.size() == 4 && seg[2] == "cordon") {
      if (m != "PUT" && m != "DELETE") co_return method_not_allowed("PUT, DELETE");
      auto r = co_await agent_.cordon(seg[1], seg[3], m == "PUT");
      if (!r.ok()) co_return problem_reply(r.status());
      co_return ok_json(node_json(*r, c.registry.get(seg[1])));
    }
  } else if (kind == "pools") {
    if (seg.size() == 1) {
      if (!get) co_return method_not_allowed("GET");
      json a = json::array();
      for (const auto& [n, p] : c.specs.pools) a.push_back(pool_json(p, c));
      co_return ok_json(a);
    }
    if (seg.size() == 2) {
      const std::string name = seg[1];
      if (get) {
        const PoolSpec* p = c.specs.pool(name);
        if (!p) co_return problem_reply(Status::Errorf(Errc::kNoEnt, "pool '{}' is not declared", name));
        co_return ok_json(pool_json(*p, c));
      }
      if (m == "PUT") {
        auto j = body_object(call, {"node", "disk", "labels"});
        if (!j.ok()) co_return problem_reply(j.status());
        auto node = j->find("node");
        auto disk = j->find("disk");
        if (node == j->end() || !node->is_string()) co_return bad("'node': the node's name (required)");
        if (disk == j->end() || !disk->is_string()) co_return bad("'disk': a device URI on the node (required)");
        auto labels = labels_field(*j, "labels");
        if (!labels.ok()) co_return problem_reply(labels.status());
        bool existed = c.specs.pool(name) != nullptr;
        auto r = co_await agent_.pools().declare(name, node->get<std::string>(), disk->get<std::string>(), *labels);
        if (!r.ok()) co_return problem_reply(r.status());
        co_return ok_json(pool_json(*r, c), existed ? 200 : 201);
      }
      if (m == "DELETE") {
        auto q = parse_query(call.query);
        bool force = q.count("force") && (q["force"] == "true" || q["force"] == "1");
        Status s = co_await agent_.pools().destroy(name, force);
        if (!s.ok()) co_return problem_reply(s);
        co_return no_content();
      }
      co_return method_not_allowed("GET, PUT, DELETE");
    }
  } else if (kind == "snapshots") {
    if (seg.size() == 1) {
      if (!get) co_return method_not_allowed("GET");
      json a = json::array();
      for (const auto& [id, sn] : c.specs.snapshots) a.push_back(snapshot_json(sn, c));
      co_return ok_json(a);
    }
    if (seg.size() == 2) {
      auto su = Uuid::Parse(seg[1]);
      if (!su.ok()) co_return bad(fmt::format("'{}' is not a snapshot UUID", seg[1]));
      if (get) {
        const SnapshotSpec* sn = c.specs.snapshot(su->ToString());
        if (!sn) co_return problem_reply(Status::Errorf(Errc::kNoEnt, "snapshot {} does not exist", su->ToString()));
        co_return ok_json(snapshot_json(*sn, c));
      }
      if (m == "DELETE") {
        Status s = co_await agent_.snapshots().destroy(su->ToString());
        if (!s.ok()) co_return problem_reply(s);
        co_return no_content();
      }
      co_return method_not_allowed("GET, DELETE");
    }
  } else if (kind == "replicas") {
    if (seg.size() == 1) {
      if (!get) co_return method_not_allowed("GET");
      json a = json::array();
      for (const auto& [id, r] : c.specs.replicas) a.push_back(replica_json(r, c));
      co_return ok_json(a);
    }
  } else if (kind == "volumes") {
    if (seg.size() == 1) {
      if (!get) co_return method_not_allowed("GET");
      json a = json::array();
      for (const auto& [id, v] : c.specs.volumes) a.push_back(volume_json(v, c));
      co_return ok_json(a);
    }
    if (seg.size() == 2) {
      auto uuid = Uuid::Parse(seg[1]);
      if (!uuid.ok()) co_return bad(fmt::format("'{}' is not a volume UUID", seg[1]));
      const std::string id = uuid->ToString();
      if (get) {
        const VolumeSpec* v = c.specs.volume(id);
        if (!v) co_return problem_reply(Status::Errorf(Errc::kNoEnt, "volume {} does not exist", id));
        json j = volume_json(*v, c);
        // One volume: its nexus as the target's engine sees it now (children, rebuilds with progress).
        if (v->target && v->target->state == TargetSpec::State::kPublished && c.registry.online(v->target->node)) {
          std::string node = v->target->node;
          ev1::ListNexusesRequest lr;
          lr.set_uuid(id);
          auto l = co_await c.engines.call<ev1::NexusService>(c.endpoint(node), &ev1::NexusService::Stub::async::ListNexuses, lr, 5000);
          if (l.ok() && !l->nexuses().empty()) j["nexus"] = nexus_json(l->nexuses(0));
        }
        co_return ok_json(j);
      }
      if (m == "PUT") {
        auto a = volume_args(id, call);
        if (!a.ok()) co_return problem_reply(a.status());
        bool existed = c.specs.volume(id) != nullptr;
        auto r = co_await agent_.volumes().create(*a);
        if (!r.ok()) co_return problem_reply(r.status());
        co_return ok_json(volume_json(*r, c), existed ? 200 : 201);
      }
      if (m == "DELETE") {
        Status s = co_await agent_.volumes().destroy(id);
        if (!s.ok()) co_return problem_reply(s);
        co_return no_content();
      }
      co_return method_not_allowed("GET, PUT, DELETE");
    }
    if (seg.size() == 4 && seg[2] == "size") {
      auto uuid = Uuid::Parse(seg[1]);
      if (!uuid.ok()) co_return bad(fmt::format("'{}' is not a volume UUID", seg[1]));
      if (m != "PUT") co_return method_not_allowed("PUT");
      char* end = nullptr;
      unsigned long long n = std::strtoull(seg[3].c_str(), &end, 10);
      if (seg[3].empty() || *end != '\0') co_return bad(fmt::format("size '{}': bytes, a positive integer", seg[3]));
      auto r = co_await agent_.volumes().expand(uuid->ToString(), uint64_t(n));
      if (!r.ok()) co_return problem_reply(r.status());
      co_return ok_json(volume_json(*r, c));
    }
    if (seg.size() == 4 && seg[2] == "replica_count") {
      auto uuid = Uuid::Parse(seg[1]);
      if (!uuid.ok()) co_return bad(fmt::format("'{}' is not a volume UUID", seg[1]));
      if (m != "PUT") co_return method_not_allowed("PUT");
      char* end = nullptr;
      unsigned long n = std::strtoul(seg[3].c_str(), &end, 10);
      if (seg[3].empty() || *end != '\0' || n > 1000) co_return bad(fmt::format("replica count '{}': a number from 1 to 8", seg[3]));
      auto r = co_await agent_.volumes().scale(uuid->ToString(), uint32_t(n));
      if (!r.ok()) co_return problem_reply(r.status());
      co_return ok_json(volume_json(*r, c));
    }
    if (seg.size() >= 3 && seg.size() <= 4 && seg[2] == "snapshots") {
      auto uuid = Uuid::Parse(seg[1]);
      if (!uuid.ok()) co_return bad(fmt::format("'{}' is not a volume UUID", seg[1]));
      const std::string id = uuid->ToString();
      if (seg.size() == 3) {
        if (!get) co_return method_not_allowed("GET");
        if (!c.specs.volume(id)) co_return problem_reply(Status::Errorf(Errc::kNoEnt, "volume {} does not exist", id));
        json a = json::array();
        for (const auto& [sid, sn] : c.specs.snapshots) {
          if (sn.volume == id) a.push_back(snapshot_json(sn, c));
        }
        co_return ok_json(a);
      }
      auto su = Uuid::Parse(seg[3]);
      if (!su.ok()) co_return bad(fmt::format("'{}' is not a snapshot UUID", seg[3]));
      const std::string sid = su->ToString();
      const SnapshotSpec* have = c.specs.snapshot(sid);
      if (get || m == "DELETE") {
        if (!have || have->volume != id) {
          co_return problem_reply(Status::Errorf(Errc::kNoEnt, "volume {} has no snapshot {}", id, sid));
        }
        if (get) co_return ok_json(snapshot_json(*have, c));
        Status s = co_await agent_.snapshots().destroy(sid);
        if (!s.ok()) co_return problem_reply(s);
        co_return no_content();
      }
      if (m == "PUT") {
        std::string name;
        if (!call.body.empty()) {
          auto j = body_object(call, {"name"});
          if (!j.ok()) co_return problem_reply(j.status());
          if (auto n = j->find("name"); n != j->end() && !n->is_null()) {
            if (!n->is_string()) co_return bad("'name': a string (1 to 255 bytes)");
            name = n->get<std::string>();
          }
        }
        const bool existed = have != nullptr;
        auto r = co_await agent_.snapshots().create(id, sid, name);
        if (!r.ok()) co_return problem_reply(r.status());
        co_return ok_json(snapshot_json(*r, c), existed ? 200 : 201);
      }
      co_return method_not_allowed("GET, PUT, DELETE");
    }
    if (seg.size() == 3 && seg[2] == "properties") {
      auto uuid = Uuid::Parse(seg[1]);
      if (!uuid.ok()) co_return bad(fmt::format("'{}' is not a volume UUID", seg[1]));
      if (m != "PUT") co_return method_not_allowed("PUT");
      auto j = body_object(call, {"labels", "max_snapshots", "rebuild_rate_bytes_per_s"});
      if (!j.ok()) co_return problem_reply(j.status());
      VolumeProperties p;
      if (auto l = j->find("labels"); l != j->end()) {
        auto labels = labels_field(*j, "labels");
        if (!labels.ok()) co_return problem_reply(labels.status());
        p.labels = *labels;
      }
      if (auto x = j->find("max_snapshots"); x != j->end()) {
        if (!x->is_number_unsigned() || x->get<uint64_t>() > 1000) co_return bad("'max_snapshots': 0 (no limit) to 1000");
        p.max_snapshots = uint32_t(x->get<uint64_t>());
      }
      if (auto x = j->find("rebuild_rate_bytes_per_s"); x != j->end()) {
        if (!x->is_number_unsigned()) co_return bad("'rebuild_rate_bytes_per_s': bytes per second, 0 for no limit");
        uint64_t rate = x->get<uint64_t>();
        if (rate != 0 && rate < (1u << 20)) co_return bad("'rebuild_rate_bytes_per_s': at least 1 MiB/s (1048576), or 0 for no limit");
        p.rebuild_rate = rate;
      }
      auto r = co_await agent_.volumes().set_properties(uuid->ToString(), p);
      if (!r.ok()) co_return problem_reply(r.status());
      co_return ok_json(volume_json(*r, c));
    }
    if (seg.size() == 3 && (seg[2] == "rebuild_history" || seg[2] == "record")) {
      auto uuid = Uuid::Parse(seg[1]);
      if (!uuid.ok()) co_return bad(fmt::format("'{}' is not a volume UUID", seg[1]));
      if (!get) co_return method_not_allowed("GET");
      const std::string id = uuid->ToString();
      if (!c.specs.volume(id)) co_return problem_reply(Status::Errorf(Errc::kNoEnt, "volume {} does not exist", id));
      const bool history = seg[2] == "rebuild_history";
      std::string key = c.specs.keys().record(id) + (history ? "/rebuilds" : "");
      auto text = co_await c.specs.read(std::move(key));
      if (!text.ok() && text.code() != Errc::kNoEnt) co_return problem_reply(text.status());
      if (history) {
        json a = json::array();
        if (text.ok()) {
          auto h = nexus::RebuildHistoryFromJson(*text);
          if (!h.ok()) co_return problem_reply(Status::Errorf(Errc::kCorruption, "volume {}: its rebuild history: {}", id, h.status().message()));
          a = json::parse(nexus::RebuildHistoryToJson(*h));
        }
        co_return ok_json({{"volume", id}, {"rebuilds", a}});
      }
      if (!text.ok()) co_return problem_reply(Status::Errorf(Errc::kNoEnt, "volume {} has no nexus record (never published)", id));
      auto rec = nexus::NexusRecord::FromJson(*text);
      if (!rec.ok()) co_return problem_reply(Status::Errorf(Errc::kCorruption, "volume {}: its nexus record: {}", id, rec.status().message()));
      json kids = json::array();
      for (const auto& ch : rec->children) {
        json k = {{"uuid", ch.uuid.ToString()}, {"healthy", ch.healthy}};
        auto r = c.specs.replicas.find(ch.uuid.ToString());
        if (r != c.specs.replicas.end()) k["node"] = r->second.node;
        kids.push_back(std::move(k));
      }
      co_return ok_json({{"volume", id}, {"generation", rec->generation}, {"clean_shutdown", rec->clean_shutdown}, {"children", kids}});
    }
    if (seg.size() == 3 && seg[2] == "target") {
      auto uuid = Uuid::Parse(seg[1]);
      if (!uuid.ok()) co_return bad(fmt::format("'{}' is not a volume UUID", seg[1]));
      if (m == "PUT") {
        PublishArgs a;
        if (!call.body.empty()) {
          auto j = body_object(call, {"node", "protocol", "allowed_hosts", "republish"});
          if (!j.ok()) co_return problem_reply(j.status());
          if (auto n = j->find("node"); n != j->end() && !n->is_null()) {
            if (!n->is_string()) co_return bad("'node': a node's name");
            a.node = n->get<std::string>();
          }
          if (auto p = j->find("protocol"); p != j->end() && !p->is_null()) {
            if (!p->is_string()) co_return bad("'protocol': nvmf or nbd");
            a.protocol = p->get<std::string>();
          }
          if (auto h = j->find("allowed_hosts"); h != j->end() && !h->is_null()) {
            if (!h->is_array()) co_return bad("'allowed_hosts': an array of host NQNs");
            for (const json& x : *h) {
              if (!x.is_string()) co_return bad("'allowed_hosts': an array of host NQNs");
              a.allowed_hosts.push_back(x.get<std::string>());
            }
          }
          if (auto r = j->find("republish"); r != j->end() && !r->is_null()) {
            if (!r->is_boolean()) co_return bad("'republish': true or false");
            a.republish = r->get<bool>();
          }
        }
        auto r = co_await agent_.targets().publish(uuid->ToString(), a);
        if (!r.ok()) co_return problem_reply(r.status());
        co_return ok_json(volume_json(*r, c));
      }
      if (m == "DELETE") {
        Status s = co_await agent_.targets().unpublish(uuid->ToString());
        if (!s.ok()) co_return problem_reply(s);
        co_return no_content();
      }
      co_return method_not_allowed("PUT, DELETE");
    }
  }
  co_return problem_reply(Status::Errorf(Errc::kNoEnt, "no such path: {}", call.path));
}

}  // namespace tern::control
