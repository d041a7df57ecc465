#include "control/specs.h"

#include <nlohmann/json.hpp>

namespace tern::control {

using json = nlohmann::json;

std::string_view spec_state_name(SpecState s) {
  switch (s) {
    case SpecState::kCreating: return "creating";
    case SpecState::kCreated: return "created";
    case SpecState::kDeleting: return "deleting";
  }
  return "unknown";
}

std::string_view target_state_name(TargetSpec::State s) {
  switch (s) {
    case TargetSpec::State::kPublishing: return "publishing";
    case TargetSpec::State::kPublished: return "published";
    case TargetSpec::State::kUnpublishing: return "unpublishing";
  }
  return "unknown";
}

Status check_name(std::string_view what, std::string_view name) {
  if (name.empty() || name.size() > 63) {
    return Status::Errorf(Errc::kInval, "{} name '{}': 1 to 63 characters of [A-Za-z0-9._-]", what, name);
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return Status::Errorf(Errc::kInval, "{} name '{}': 1 to 63 characters of [A-Za-z0-9._-]", what, name);
  }
  return Status::Ok();
}

namespace {

// Reads the fields of one document; the first error sticks and names the document and the field.
class Reader {
 public:
  Reader(std::string_view doc, const json& j) : doc_(doc), j_(j) {}

  std::string str(const char* f, bool required = true) {
    auto it = j_.find(f);
    if (it == j_.end()) {
      if (required) fail(f, "is missing");
      return {};
    }
    if (!it->is_string()) {
      fail(f, "is not a string");
      return {};
    }
    return it->get<std::string>();
  }
  uint64_t u64(const char* f, bool required = true) {
    auto it = j_.find(f);
    if (it == j_.end()) {
      if (required) fail(f, "is missing");
      return 0;
    }
    if (!it->is_number_unsigned()) {
      fail(f, "is not a non-negative integer");
      return 0;
    }
    return it->get<uint64_t>();
  }
  bool boolean(const char* f) {
    auto it = j_.find(f);
    if (it == j_.end()) return false;
    if (!it->is_boolean()) {
      fail(f, "is not a boolean");
      return false;
    }
    return it->get<bool>();
  }
  Labels labels(const char* f) {
    Labels out;
    auto it = j_.find(f);
    if (it == j_.end()) return out;
    if (!it->is_object()) {
      fail(f, "is not an object of strings");
      return out;
    }
    for (auto e = it->begin(); e != it->end(); ++e) {
      if (!e.value().is_string()) {
        fail(f, "is not an object of strings");
        return out;
      }
      out[e.key()] = e.value().get<std::string>();
    }
    return out;
  }
  std::vector<std::string> strings(const char* f) {
    std::vector<std::string> out;
    auto it = j_.find(f);
    if (it == j_.end()) return out;
    if (!it->is_array()) {
      fail(f, "is not an array of strings");
      return out;
    }
    for (const json& e : *it) {
      if (!e.is_string()) {
        fail(f, "is not an array of strings");
        return {};
      }
      out.push_back(e.get<std::string>());
    }
    return out;
  }
  SpecState state(const char* f) {
    std::string s = str(f);
    if (s == "creating") return SpecState::kCreating;
    if (s == "created") return SpecState::kCreated;
    if (s == "deleting") return SpecState::kDeleting;
    if (status_.ok()) fail(f, fmt::format("'{}' is not creating, created or deleting", s));
    return SpecState::kCreating;
  }
  void fail(std::string_view field, std::string_view what) {
    if (status_.ok()) status_ = Status::Errorf(Errc::kInval, "{} spec: '{}' {}", doc_, field, what);
  }
  const Status& status() const { return status_; }

 private:
  std::string_view doc_;
  const json& j_;
  Status status_;
};

// Parses an object and checks its version; the reader's document name for messages.
Result<json> parse_doc(std::string_view doc, std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Status::Errorf(Errc::kInval, "{} spec: not a JSON object", doc);
  auto v = j.find("v");
  if (v == j.end() || !v->is_number_unsigned()) return Status::Errorf(Errc::kInval, "{} spec: 'v' (the version) is missing", doc);
  if (v->get<uint64_t>() != uint64_t(kSpecVersion)) {
    return Status::Errorf(Errc::kNotSup, "{} spec: version {} (this agent reads version {})", doc, v->get<uint64_t>(), kSpecVersion);
  }
  return j;
}

json labels_json(const Labels& l) {
  json o = json::object();
  for (const auto& [k, v] : l) o[k] = v;
  return o;
}

}  // namespace

std::string NodeSpec::ToJson() const {
  json j = {{"v", kSpecVersion}, {"id", id}, {"grpc_endpoint", grpc_endpoint}, {"nvmf_endpoint", nvmf_endpoint}};
  j["labels"] = labels_json(labels);
  j["cordons"] = cordons;
  if (draining) j["draining"] = true;
  if (evacuating) j["evacuating"] = true;
  return j.dump();
}

Result<NodeSpec> NodeSpec::FromJson(std::string_view text) {
  auto j = parse_doc("node", text);
  if (!j.ok()) return j.status();
  Reader r("node", *j);
  NodeSpec s;
  s.id = r.str("id");
  s.grpc_endpoint = r.str("grpc_endpoint");
  s.nvmf_endpoint = r.str("nvmf_endpoint", false);
  s.labels = r.labels("labels");
  s.cordons = r.strings("cordons");
  s.draining = r.boolean("draining");
  s.evacuating = r.boolean("evacuating");
  if (!r.status().ok()) return r.status();
  return s;
}

std::string PoolSpec::ToJson() const {
  json j = {{"v", kSpecVersion}, {"name", name}, {"node", node}, {"disk", disk}, {"state", spec_state_name(state)}};
  j["labels"] = labels_json(labels);
  return j.dump();
}

Result<PoolSpec> PoolSpec::FromJson(std::string_view text) {
  auto j = parse_doc("pool", text);
  if (!j.ok()) return j.status();
  Reader r("pool", *j);
  PoolSpec s;
  s.name = r.str("name");
  s.node = r.str("node");
  s.disk = r.str("disk");
  s.labels = r.labels("labels");
  s.state = r.state("state");
  if (!r.status().ok()) return r.status();
  return s;
}

std::string ReplicaSpec::ToJson() const {
  json j = {{"v", kSpecVersion}, {"uuid", uuid},  {"volume", volume}, {"pool", pool},
            {"node", node},      {"size", size},  {"thin", thin},     {"state", spec_state_name(state)}};
  if (!clone_of.empty()) j["clone_of"] = clone_of;
  return j.dump();
}

Result<ReplicaSpec> ReplicaSpec::FromJson(std::string_view text) {
  auto j = parse_doc("replica", text);
  if (!j.ok()) return j.status();
  Reader r("replica", *j);
  ReplicaSpec s;
  s.uuid = r.str("uuid");
  s.volume = r.str("volume");
  s.pool = r.str("pool");
  s.node = r.str("node");
  s.size = r.u64("size");
  s.thin = r.boolean("thin");
  s.state = r.state("state");
  s.clone_of = r.str("clone_of", false);
  if (!r.status().ok()) return r.status();
  return s;
}

std::string VolumeSpec::ToJson() const {
  json j = {{"v", kSpecVersion}, {"uuid", uuid}, {"size", size}, {"replicas", replicas}, {"thin", thin},
            {"state", spec_state_name(state)}, {"generation", generation}};
  j["topology"] = {{"node_labels", labels_json(topology.node_labels)},
                   {"pool_labels", labels_json(topology.pool_labels)},
                   {"spread", topology.spread}};
  j["labels"] = labels_json(labels);
  j["replica_ids"] = replica_ids;
  if (!source_snapshot.empty()) j["source_snapshot"] = source_snapshot;
  if (!adopt_labels_of.empty()) j["adopt_labels_of"] = adopt_labels_of;
  if (max_snapshots) j["max_snapshots"] = max_snapshots;
  if (rebuild_rate) j["rebuild_rate"] = rebuild_rate;
  if (target) {
    j["target"] = {{"node", target->node},
                   {"protocol", target->protocol},
                   {"allowed_hosts", target->allowed_hosts},
                   {"generation", target->generation},
                   {"uri", target->uri},
                   {"state", target_state_name(target->state)}};
  }
  return j.dump();
}

Result<VolumeSpec> VolumeSpec::FromJson(std::string_view text) {
  auto j = parse_doc("volume", text);
  if (!j.ok()) return j.status();
  Reader r("volume", *j);
  VolumeSpec s;
  s.uuid = r.str("uuid");
  s.size = r.u64("size");
  uint64_t n = r.u64("replicas");
  if (r.status().ok() && (n < 1 || n > 8)) r.fail("replicas", "is not 1 to 8");
  s.replicas = uint32_t(n);
  s.thin = r.boolean("thin");
  s.state = r.state("state");
  s.generation = r.u64("generation", false);
  s.labels = r.labels("labels");
  s.replica_ids = r.strings("replica_ids");
  s.source_snapshot = r.str("source_snapshot", false);
  s.adopt_labels_of = r.strings("adopt_labels_of");
  uint64_t ms = r.u64("max_snapshots", false);
  if (r.status().ok() && ms > 0xFFFFFFFFull) r.fail("max_snapshots", "is too large");
  s.max_snapshots = uint32_t(ms);
  s.rebuild_rate = r.u64("rebuild_rate", false);
  if (auto t = j->find("topology"); t != j->end()) {
    if (!t->is_object()) {
      r.fail("topology", "is not an object");
    } else {
      Reader tr("volume topology", *t);
      s.topology.node_labels = tr.labels("node_labels");
      s.topology.pool_labels = tr.labels("pool_labels");
      s.topology.spread = tr.strings("spread");
      if (!tr.status().ok()) return tr.status();
    }
  }
  if (auto t = j->find("target"); t != j->end() && !t->is_null()) {
    if (!t->is_object()) {
      r.fail("target", "is not an object");
    } else {
      Reader tr("volume target", *t);
      TargetSpec ts;
      ts.node = tr.str("node");
      ts.protocol = tr.str("protocol");
      ts.allowed_hosts = tr.strings("allowed_hosts");
      ts.generation = tr.u64("generation");
      ts.uri = tr.str("uri", false);
      std::string st = tr.str("state");
      if (st == "publishing") {
        ts.state = TargetSpec::State::kPublishing;
      } else if (st == "published") {
        ts.state = TargetSpec::State::kPublished;
      } else if (st == "unpublishing") {
        ts.state = TargetSpec::State::kUnpublishing;
      } else if (tr.status().ok()) {
        tr.fail("state", fmt::format("'{}' is not publishing, published or unpublishing", st));
      }
      if (!tr.status().ok()) return tr.status();
      s.target = std::move(ts);
    }
  }
  if (!r.status().ok()) return r.status();
  return s;
}

std::string SnapshotSpec::ToJson() const {
  json j = {{"v", kSpecVersion}, {"uuid", uuid}, {"volume", volume}, {"name", name}, {"size", size},
            {"created_unix_s", created_unix_s}, {"state", spec_state_name(state)}};
  json a = json::array();
  for (const Part& p : parts) a.push_back({{"uuid", p.uuid}, {"replica", p.replica}, {"pool", p.pool}, {"node", p.node}});
  j["parts"] = std::move(a);
  j["adopt_labels_of"] = adopt_labels_of;
  return j.dump();
}

Result<SnapshotSpec> SnapshotSpec::FromJson(std::string_view text) {
  auto j = parse_doc("snapshot", text);
  if (!j.ok()) return j.status();
  Reader r("snapshot", *j);
  SnapshotSpec s;
  s.uuid = r.str("uuid");
  s.volume = r.str("volume");
  s.name = r.str("name");
  s.size = r.u64("size");
  s.created_unix_s = r.u64("created_unix_s", false);
  s.state = r.state("state");
  s.adopt_labels_of = r.strings("adopt_labels_of");
  if (!r.status().ok()) return r.status();
  auto parts = j->find("parts");
  if (parts == j->end() || !parts->is_array()) return Status(Errc::kInval, "snapshot spec: 'parts' is not an array");
  for (const json& e : *parts) {
    if (!e.is_object()) return Status(Errc::kInval, "snapshot spec: 'parts' holds a non-object");
    Reader pr("snapshot part", e);
    Part p;
    p.uuid = pr.str("uuid");
    p.replica = pr.str("replica");
    p.pool = pr.str("pool");
    p.node = pr.str("node");
    if (!pr.status().ok()) return pr.status();
    s.parts.push_back(std::move(p));
  }
  return s;
}

}  // namespace tern::control
