#include "csi/controller.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "common/log.h"
#include "csi/ids.h"
#include "csi/params.h"

namespace tern::csi {

using json = nlohmann::json;
using grpc::StatusCode;

namespace {

constexpr uint64_t kDefaultSize = 1ull << 30;  // a claim without a size
constexpr const char* kLabelName = "csi.tern.io/name";
constexpr const char* kLabelPvc = "csi.tern.io/pvc";

grpc::Status invalid(std::string msg) { return grpc::Status(StatusCode::INVALID_ARGUMENT, std::move(msg)); }
grpc::Status aborted(const std::string& what) {
  return grpc::Status(StatusCode::ABORTED, fmt::format("an operation on {} is already in progress", what));
}
grpc::Status from(const Status& s) {
  StatusCode c = s.code() == Errc::kRange ? StatusCode::OUT_OF_RANGE : StatusCode::INVALID_ARGUMENT;
  return grpc::Status(c, std::string(s.message()));
}

int64_t num(const json& j, const char* key) { return j.contains(key) && j[key].is_number() ? j[key].get<int64_t>() : 0; }
std::string str(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

// The volume's health for the CO (VOLUME_CONDITION): anything but online is abnormal, with why.
void condition(const json& v, pb::VolumeCondition* c) {
  std::string status = str(v, "status");
  size_t total = v.contains("replica_details") && v["replica_details"].is_array() ? v["replica_details"].size() : 0;
  size_t online = 0;
  if (total) {
    for (const json& r : v["replica_details"]) online += str(r, "status") == "online";
  }
  c->set_abnormal(status != "online" && status != "creating");
  c->set_message(fmt::format("{}: {} of {} replica(s) online{}", status, online, num(v, "replicas"),
                             v.contains("target") && v["target"].is_object()
                                 ? fmt::format(", target on {}", str(v["target"], "node"))
                                 : std::string()));
}

void fill_volume(const json& v, pb::Volume* out) {
  out->set_volume_id(str(v, "uuid"));
  out->set_capacity_bytes(num(v, "size"));
  if (std::string src = str(v, "source_snapshot"); !src.empty()) {
    out->mutable_content_source()->mutable_snapshot()->set_snapshot_id(src);
  }
}

void fill_snapshot(const json& s, pb::Snapshot* out) {
  out->set_snapshot_id(str(s, "uuid"));
  out->set_source_volume_id(str(s, "volume"));
  out->set_size_bytes(num(s, "size"));
  out->mutable_creation_time()->set_seconds(num(s, "created_unix_s"));
  out->set_ready_to_use(str(s, "state") == "created");
}

// A page of `items` (sorted by UUID) after `token` (the UUID of the last entry of the previous page, so
// an entry deleted between pages shifts nothing): [begin, end) and the next token.
grpc::Status page(const std::vector<json>& items, int32_t max_entries, const std::string& token, size_t* begin,
                  size_t* end, std::string* next) {
  if (max_entries < 0) return invalid(fmt::format("max_entries {}: must not be negative", max_entries));
  const size_t n = items.size();
  size_t at = 0;
  if (!token.empty()) {
    if (!is_uuid(token)) {
      return grpc::Status(StatusCode::ABORTED, fmt::format("starting_token '{}' is not one this plugin gave", token));
    }
    at = size_t(std::upper_bound(items.begin(), items.end(), token,
                                 [](const std::string& t, const json& j) { return t < str(j, "uuid"); }) -
                items.begin());
  }
  *begin = at;
  *end = max_entries > 0 ? std::min(n, at + size_t(max_entries)) : n;
  next->clear();
  if (*end < n && *end > 0) *next = str(items[*end - 1], "uuid");
  return grpc::Status::OK;
}

grpc::Status check_capabilities(const google::protobuf::RepeatedPtrField<pb::VolumeCapability>& caps) {
  if (caps.empty()) return invalid("volume_capabilities: at least one is required");
  for (const auto& c : caps) {
    if (std::string why = unsupported(c); !why.empty()) return invalid("volume_capabilities: " + why);
  }
  return grpc::Status::OK;
}

}  // namespace

std::string unsupported(const pb::VolumeCapability& c) {
  if (!c.has_access_mode()) return "access_mode is required";
  switch (c.access_mode().mode()) {
    case pb::VolumeCapability::AccessMode::SINGLE_NODE_WRITER:
    case pb::VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY:
    case pb::VolumeCapability::AccessMode::SINGLE_NODE_SINGLE_WRITER:
    case pb::VolumeCapability::AccessMode::SINGLE_NODE_MULTI_WRITER: break;
    default:
      return fmt::format("access mode {} is not served (a tern volume is attached to one node at a time)",
                         pb::VolumeCapability::AccessMode::Mode_Name(c.access_mode().mode()));
  }
  if (c.has_mount()) {
    const std::string& fs = c.mount().fs_type();
    if (!fs.empty() && fs != "ext4" && fs != "xfs") return fmt::format("fs_type '{}' (ext4 or xfs)", fs);
    return "";
  }
  if (c.has_block()) return "";
  return "access_type (block or mount) is required";
}

grpc::Status ControllerService::CreateVolume(grpc::ServerContext*, const pb::CreateVolumeRequest* req,
                                             pb::CreateVolumeResponse* resp) {
  if (req->name().empty()) return invalid("name is required");
  if (auto s = check_capabilities(req->volume_capabilities()); !s.ok()) return s;
  auto params = parse_parameters({req->parameters().begin(), req->parameters().end()});
  if (!params.ok()) return from(params.status());
  for (const auto& c : req->volume_capabilities()) {
    if (c.has_mount() && !c.mount().fs_type().empty() && req->parameters().count("csi.storage.k8s.io/fstype") == 0) {
      params->fs_type = c.mount().fs_type();
    }
  }
  const int64_t required = req->has_capacity_range() ? req->capacity_range().required_bytes() : 0;
  const int64_t limit = req->has_capacity_range() ? req->capacity_range().limit_bytes() : 0;
  auto size = size_for_range(required, limit, kDefaultSize);
  if (!size.ok()) return from(size.status());
  std::string snapshot;
  if (req->has_volume_content_source()) {
    const auto& src = req->volume_content_source();
    if (src.has_volume()) {
      return invalid("volume_content_source.volume: cloning a volume is not served; snapshot it and restore the snapshot");
    }
    snapshot = src.snapshot().snapshot_id();
    if (snapshot.empty()) return invalid("volume_content_source.snapshot.snapshot_id is required");
  }
  const std::string uuid = volume_uuid_for_name(req->name());
  auto guard = busy_.try_take(uuid);
  if (!guard) return aborted("volume " + req->name());
  const std::string what = fmt::format("volume {} ({})", req->name(), uuid);

  // The snapshot to restore: its size is the volume's at least (the agent restores at that size, then
  // the volume is grown to what was asked).
  uint64_t snap_size = 0;
  if (!snapshot.empty()) {
    if (!is_uuid(snapshot)) return grpc::Status(StatusCode::NOT_FOUND, fmt::format("snapshot {} does not exist", snapshot));
    rest::RestReply r;
    if (auto s = agent_.expect("GET", "/v1/snapshots/" + snapshot, nullptr, {200}, &r, "snapshot " + snapshot); !s.ok()) {
      return s;
    }
    if (str(r.body, "state") != "created") {
      return grpc::Status(StatusCode::UNAVAILABLE, fmt::format("snapshot {} is {}", snapshot, str(r.body, "state")));
    }
    snap_size = uint64_t(num(r.body, "size"));
    if (required > 0 ? *size < snap_size : false) {
      return grpc::Status(StatusCode::OUT_OF_RANGE, fmt::format("capacity_range: {} bytes is smaller than snapshot {} ({} bytes)",
                                                                required, snapshot, snap_size));
    }
    if (required == 0) *size = std::max(*size, snap_size);
    if (limit > 0 && snap_size > uint64_t(limit)) {
      return grpc::Status(StatusCode::OUT_OF_RANGE,
                          fmt::format("capacity_range: snapshot {} ({} bytes) exceeds the limit {}", snapshot, snap_size, limit));
    }
  }

  // Made already (a retry, or the same claim again)? Then it must be what is asked now.
  rest::RestReply cur;
  if (auto s = agent_.call("GET", "/v1/volumes/" + uuid, nullptr, &cur); !s.ok()) return s;
  if (cur.status == 200) {
    const json& v = cur.body;
    std::string diff;
    uint64_t have = uint64_t(num(v, "size"));
    if (have < *size || (limit > 0 && have > uint64_t(limit))) diff = fmt::format("size {} bytes", have);
    if (uint32_t(num(v, "replicas")) != params->replicas) diff = fmt::format("{} replica(s)", num(v, "replicas"));
    if (v.value("thin", false) != params->thin) diff = v.value("thin", false) ? "thin provisioning" : "thick provisioning";
    if (str(v, "source_snapshot") != snapshot) {
      diff = snapshot.empty() ? "another content source" : fmt::format("no content from snapshot {}", snapshot);
    }
    if (!diff.empty()) {
      return grpc::Status(StatusCode::ALREADY_EXISTS, fmt::format("{} exists with {}", what, diff));
    }
    if (str(v, "state") != "created") return grpc::Status(StatusCode::ABORTED, fmt::format("{} is {}", what, str(v, "state")));
  } else if (cur.status != 404) {
    return Agent::status_for(cur, "reading " + what);
  } else {
    json body = {{"replicas", params->replicas}, {"thin", params->thin}};
    if (snapshot.empty()) {
      body["size"] = *size;
    } else {
      body["snapshot"] = snapshot;
    }
    json topo = json::object();
    if (!params->node_labels.empty()) topo["node_labels"] = params->node_labels;
    if (!params->pool_labels.empty()) topo["pool_labels"] = params->pool_labels;
    if (!params->spread.empty()) topo["spread"] = params->spread;
    if (!topo.empty()) body["topology"] = topo;
    json labels = {{kLabelName, req->name()}};
    if (!params->pvc_name.empty()) labels[kLabelPvc] = params->pvc_namespace + "/" + params->pvc_name;
    body["labels"] = labels;
    rest::RestReply r;
    if (auto s = agent_.expect("PUT", "/v1/volumes/" + uuid, &body, {200, 201}, &r, "creating " + what); !s.ok()) return s;
    cur = std::move(r);
    TLOG_INFO("csi", "created {}: {} bytes, {} replica(s){}", what, num(cur.body, "size"), params->replicas,
              snapshot.empty() ? "" : ", from snapshot " + snapshot);
  }
  // A restored volume is grown to the size asked for.
  if (uint64_t(num(cur.body, "size")) < *size) {
    rest::RestReply r;
    if (auto s = agent_.expect("PUT", fmt::format("/v1/volumes/{}/size/{}", uuid, *size), nullptr, {200}, &r,
                               "growing " + what);
        !s.ok()) {
      return s;
    }
    cur = std::move(r);
  }
  if (params->max_snapshots || params->rebuild_rate) {
    json props = json::object();
    if (params->max_snapshots && num(cur.body, "max_snapshots") != int64_t(*params->max_snapshots)) {
      props["max_snapshots"] = *params->max_snapshots;
    }
    if (params->rebuild_rate && num(cur.body, "rebuild_rate_bytes_per_s") != int64_t(*params->rebuild_rate)) {
      props["rebuild_rate_bytes_per_s"] = *params->rebuild_rate;
    }
    if (!props.empty()) {
      rest::RestReply r;
      if (auto s = agent_.expect("PUT", fmt::format("/v1/volumes/{}/properties", uuid), &props, {200}, &r,
                                 "setting the properties of " + what);
          !s.ok()) {
        return s;
      }
    }
  }
  pb::Volume* out = resp->mutable_volume();
  fill_volume(cur.body, out);
  for (const auto& [k, v] : volume_context(*params)) (*out->mutable_volume_context())[k] = v;
  return grpc::Status::OK;
}

grpc::Status ControllerService::DeleteVolume(grpc::ServerContext*, const pb::DeleteVolumeRequest* req,
                                             pb::DeleteVolumeResponse*) {
  const std::string& id = req->volume_id();
  if (id.empty()) return invalid("volume_id is required");
  if (!is_uuid(id)) return grpc::Status::OK;  // never one of ours: nothing to delete
  auto guard = busy_.try_take(id);
  if (!guard) return aborted("volume " + id);
  rest::RestReply cur;
  if (auto s = agent_.call("GET", "/v1/volumes/" + id, nullptr, &cur); !s.ok()) return s;
  if (cur.status == 404) return grpc::Status::OK;
  if (cur.status != 200) return Agent::status_for(cur, "reading volume " + id);
  if (cur.body.contains("target") && cur.body["target"].is_object()) {
    return grpc::Status(StatusCode::FAILED_PRECONDITION,
                        fmt::format("volume {} is published on node {}; unpublish it first", id, str(cur.body["target"], "node")));
  }
  rest::RestReply r;
  if (auto s = agent_.expect("DELETE", "/v1/volumes/" + id, nullptr, {200, 204, 404}, &r, "deleting volume " + id); !s.ok()) {
    return s;
  }
  TLOG_INFO("csi", "deleted volume {} ({})", id, str(cur.body.value("labels", json::object()), kLabelName));
  return grpc::Status::OK;
}

grpc::Status ControllerService::ControllerPublishVolume(grpc::ServerContext*, const pb::ControllerPublishVolumeRequest* req,
                                                        pb::ControllerPublishVolumeResponse* resp) {
  const std::string& id = req->volume_id();
  if (id.empty()) return invalid("volume_id is required");
  if (req->node_id().empty()) return invalid("node_id is required");
  if (!req->has_volume_capability()) return invalid("volume_capability is required");
  if (std::string why = unsupported(req->volume_capability()); !why.empty()) return invalid("volume_capability: " + why);
  if (!is_uuid(id)) return grpc::Status(StatusCode::NOT_FOUND, fmt::format("volume {} does not exist", id));
  auto node = parse_node_id(req->node_id());
  if (!node) {
    return grpc::Status(StatusCode::NOT_FOUND,
                        fmt::format("node '{}' is not a node of this driver (an ID is <node name>/<host NQN>)", req->node_id()));
  }
  auto guard = busy_.try_take(id);
  if (!guard) return aborted("volume " + id);
  rest::RestReply cur;
  if (auto s = agent_.expect("GET", "/v1/volumes/" + id, nullptr, {200}, &cur, "volume " + id); !s.ok()) return s;
  auto context = [&](const json& v) {
    const json& t = v["target"];
    (*resp->mutable_publish_context())["uri"] = str(t, "uri");
    (*resp->mutable_publish_context())["targetNode"] = str(t, "node");
  };
  if (cur.body.contains("target") && cur.body["target"].is_object()) {
    const json& t = cur.body["target"];
    std::vector<std::string> hosts = t.value("allowed_hosts", std::vector<std::string>{});
    if (hosts != std::vector<std::string>{node->host_nqn}) {
      return grpc::Status(StatusCode::FAILED_PRECONDITION,
                          fmt::format("volume {} is published to another host ({}); it serves one node at a time", id,
                                      hosts.empty() ? std::string("any") : fmt::format("{}", fmt::join(hosts, ", "))));
    }
    if (str(t, "state") == "published" && !str(t, "uri").empty()) {
      context(cur.body);
      return grpc::Status::OK;
    }
  }
  // The volume's target goes on the node that uses it when that node runs an engine that may take it
  // (I/O stays local to the host; its writes still go to every replica), else where the agent chooses.
  json body = {{"protocol", "nvmf"}, {"allowed_hosts", {node->host_nqn}}};
  rest::RestReply n;
  if (auto s = agent_.call("GET", "/v1/nodes/" + node->node, nullptr, &n); !s.ok()) return s;
  if (n.status == 200 && str(n.body, "status") == "online" && !n.body.value("draining", false) &&
      n.body.value("cordons", json::array()).empty()) {
    body["node"] = node->node;
  }
  rest::RestReply r;
  grpc::Status s = agent_.expect("PUT", fmt::format("/v1/volumes/{}/target", id), &body, {200, 201}, &r,
                                 fmt::format("publishing volume {} for node {}", id, node->node));
  if (!s.ok() && body.contains("node") && s.error_code() == StatusCode::ABORTED) {
    body.erase("node");  // that engine could not take it after all: let the agent choose
    s = agent_.expect("PUT", fmt::format("/v1/volumes/{}/target", id), &body, {200, 201}, &r,
                      fmt::format("publishing volume {} for node {}", id, node->node));
  }
  if (!s.ok()) return s;
  if (!r.body.contains("target") || !r.body["target"].is_object() || str(r.body["target"], "uri").empty()) {
    return grpc::Status(StatusCode::UNAVAILABLE, fmt::format("volume {}: published, but the agent gave no address yet", id));
  }
  context(r.body);
  TLOG_INFO("csi", "published volume {} for {} on {}: {}", id, node->node, str(r.body["target"], "node"),
            str(r.body["target"], "uri"));
  return grpc::Status::OK;
}

grpc::Status ControllerService::ControllerUnpublishVolume(grpc::ServerContext*, const pb::ControllerUnpublishVolumeRequest* req,
                                                          pb::ControllerUnpublishVolumeResponse*) {
  const std::string& id = req->volume_id();
  if (id.empty()) return invalid("volume_id is required");
  if (!is_uuid(id)) return grpc::Status::OK;
  auto guard = busy_.try_take(id);
  if (!guard) return aborted("volume " + id);
  rest::RestReply cur;
  if (auto s = agent_.call("GET", "/v1/volumes/" + id, nullptr, &cur); !s.ok()) return s;
  if (cur.status == 404) return grpc::Status::OK;
  if (cur.status != 200) return Agent::status_for(cur, "reading volume " + id);
  if (!cur.body.contains("target") || !cur.body["target"].is_object()) return grpc::Status::OK;
  // Only this node's publication is undone (node_id empty: any node's).
  if (!req->node_id().empty()) {
    auto node = parse_node_id(req->node_id());
    std::vector<std::string> hosts = cur.body["target"].value("allowed_hosts", std::vector<std::string>{});
    if (!node || std::find(hosts.begin(), hosts.end(), node->host_nqn) == hosts.end()) return grpc::Status::OK;
  }
  rest::RestReply r;
  if (auto s = agent_.expect("DELETE", fmt::format("/v1/volumes/{}/target", id), nullptr, {200, 204, 404}, &r,
                             "unpublishing volume " + id);
      !s.ok()) {
    return s;
  }
  TLOG_INFO("csi", "unpublished volume {} ({})", id, req->node_id());
  return grpc::Status::OK;
}

grpc::Status ControllerService::ValidateVolumeCapabilities(grpc::ServerContext*,
                                                           const pb::ValidateVolumeCapabilitiesRequest* req,
                                                           pb::ValidateVolumeCapabilitiesResponse* resp) {
  const std::string& id = req->volume_id();
  if (id.empty()) return invalid("volume_id is required");
  if (req->volume_capabilities().empty()) return invalid("volume_capabilities: at least one is required");
  if (!is_uuid(id)) return grpc::Status(StatusCode::NOT_FOUND, fmt::format("volume {} does not exist", id));
  rest::RestReply cur;
  if (auto s = agent_.expect("GET", "/v1/volumes/" + id, nullptr, {200}, &cur, "volume " + id); !s.ok()) return s;
  if (!req->parameters().empty()) {
    auto p = parse_parameters({req->parameters().begin(), req->parameters().end()});
    if (!p.ok()) {
      resp->set_message(std::string(p.status().message()));
      return grpc::Status::OK;
    }
  }
  for (const auto& c : req->volume_capabilities()) {
    if (std::string why = unsupported(c); !why.empty()) {
      resp->set_message(why);
      return grpc::Status::OK;
    }
  }
  auto* conf = resp->mutable_confirmed();
  *conf->mutable_volume_capabilities() = req->volume_capabilities();
  *conf->mutable_volume_context() = req->volume_context();
  *conf->mutable_parameters() = req->parameters();
  return grpc::Status::OK;
}

grpc::Status ControllerService::ListVolumes(grpc::ServerContext*, const pb::ListVolumesRequest* req,
                                            pb::ListVolumesResponse* resp) {
  rest::RestReply r;
  if (auto s = agent_.expect("GET", "/v1/volumes", nullptr, {200}, &r, "listing volumes"); !s.ok()) return s;
  std::vector<json> vols;
  if (r.body.is_array()) {
    for (const json& v : r.body) {
      if (str(v, "state") == "created") vols.push_back(v);
    }
  }
  std::sort(vols.begin(), vols.end(), [](const json& a, const json& b) { return str(a, "uuid") < str(b, "uuid"); });
  size_t begin = 0, end = 0;
  std::string next;
  if (auto s = page(vols, req->max_entries(), req->starting_token(), &begin, &end, &next); !s.ok()) return s;
  for (size_t i = begin; i < end; i++) {
    auto* e = resp->add_entries();
    fill_volume(vols[i], e->mutable_volume());
    condition(vols[i], e->mutable_status()->mutable_volume_condition());
  }
  resp->set_next_token(next);
  return grpc::Status::OK;
}

grpc::Status ControllerService::ControllerGetVolume(grpc::ServerContext*, const pb::ControllerGetVolumeRequest* req,
                                                    pb::ControllerGetVolumeResponse* resp) {
  const std::string& id = req->volume_id();
  if (id.empty()) return invalid("volume_id is required");
  if (!is_uuid(id)) return grpc::Status(StatusCode::NOT_FOUND, fmt::format("volume {} does not exist", id));
  rest::RestReply cur;
  if (auto s = agent_.expect("GET", "/v1/volumes/" + id, nullptr, {200}, &cur, "volume " + id); !s.ok()) return s;
  fill_volume(cur.body, resp->mutable_volume());
  condition(cur.body, resp->mutable_status()->mutable_volume_condition());
  return grpc::Status::OK;
}

grpc::Status ControllerService::GetCapacity(grpc::ServerContext*, const pb::GetCapacityRequest* req,
                                            pb::GetCapacityResponse* resp) {
  for (const auto& c : req->volume_capabilities()) {
    if (std::string why = unsupported(c); !why.empty()) {
      resp->set_available_capacity(0);  // volumes like these cannot be made at all
      return grpc::Status::OK;
    }
  }
  auto params = parse_parameters({req->parameters().begin(), req->parameters().end()});
  if (!params.ok()) return from(params.status());
  rest::RestReply pools, nodes;
  if (auto s = agent_.expect("GET", "/v1/pools", nullptr, {200}, &pools, "listing pools"); !s.ok()) return s;
  if (auto s = agent_.expect("GET", "/v1/nodes", nullptr, {200}, &nodes, "listing nodes"); !s.ok()) return s;
  std::map<std::string, json> node_by_id;
  if (nodes.body.is_array()) {
    for (const json& n : nodes.body) node_by_id[str(n, "id")] = n;
  }
  auto has_all = [](const json& labels, const StringMap& want) {
    for (const auto& [k, v] : want) {
      if (!labels.is_object() || !labels.contains(k) || !labels[k].is_string() || labels[k].get<std::string>() != v) return false;
    }
    return true;
  };
  // Free space of every pool a replica of such a volume may go to; a volume's largest size is the
  // `replicas`-th largest free space among distinct nodes (one replica per node).
  uint64_t total = 0;
  std::map<std::string, uint64_t> best_per_node;
  if (pools.body.is_array()) {
    for (const json& p : pools.body) {
      std::string st = str(p, "status");
      if (str(p, "state") != "created" || (st != "online" && st != "degraded")) continue;
      auto n = node_by_id.find(str(p, "node"));
      if (n == node_by_id.end() || str(n->second, "status") != "online" || !n->second.value("cordons", json::array()).empty()) {
        continue;
      }
      if (!has_all(p.value("labels", json::object()), params->pool_labels) ||
          !has_all(n->second.value("labels", json::object()), params->node_labels)) {
        continue;
      }
      int64_t cap = num(p, "capacity"), taken = params->thin ? num(p, "used") : num(p, "committed");
      uint64_t free = cap > taken ? uint64_t(cap - taken) : 0;
      total += free;
      uint64_t& b = best_per_node[str(p, "node")];
      b = std::max(b, free);
    }
  }
  std::vector<uint64_t> per_node;
  for (const auto& [_, v] : best_per_node) per_node.push_back(v);
  std::sort(per_node.rbegin(), per_node.rend());
  resp->set_available_capacity(int64_t(total));
  uint64_t max_size = per_node.size() >= params->replicas ? per_node[params->replicas - 1] / 4096 * 4096 : 0;
  resp->mutable_maximum_volume_size()->set_value(int64_t(max_size));
  return grpc::Status::OK;
}

grpc::Status ControllerService::ControllerGetCapabilities(grpc::ServerContext*, const pb::ControllerGetCapabilitiesRequest*,
                                                          pb::ControllerGetCapabilitiesResponse* resp) {
  using T = pb::ControllerServiceCapability::RPC;
  for (auto t : {T::CREATE_DELETE_VOLUME, T::PUBLISH_UNPUBLISH_VOLUME, T::LIST_VOLUMES, T::GET_CAPACITY,
                 T::CREATE_DELETE_SNAPSHOT, T::LIST_SNAPSHOTS, T::EXPAND_VOLUME, T::VOLUME_CONDITION, T::GET_VOLUME,
                 T::SINGLE_NODE_MULTI_WRITER}) {
    resp->add_capabilities()->mutable_rpc()->set_type(t);
  }
  return grpc::Status::OK;
}

grpc::Status ControllerService::CreateSnapshot(grpc::ServerContext*, const pb::CreateSnapshotRequest* req,
                                               pb::CreateSnapshotResponse* resp) {
  if (req->name().empty()) return invalid("name is required");
  if (req->source_volume_id().empty()) return invalid("source_volume_id is required");
  for (const auto& [k, v] : req->parameters()) {
    // The snapshotter's --extra-create-metadata keys (the VolumeSnapshot's name and namespace) pass.
    if (k.rfind("csi.storage.k8s.io/", 0) != 0) {
      return invalid(fmt::format("parameters: '{}' (a tern snapshot takes no parameters)", k));
    }
  }
  const std::string& vol = req->source_volume_id();
  const std::string uuid = snapshot_uuid_for_name(req->name());
  auto guard = busy_.try_take(uuid);
  if (!guard) return aborted("snapshot " + req->name());
  rest::RestReply cur;
  if (auto s = agent_.call("GET", "/v1/snapshots/" + uuid, nullptr, &cur); !s.ok()) return s;
  if (cur.status == 200) {
    if (str(cur.body, "volume") != vol) {
      return grpc::Status(StatusCode::ALREADY_EXISTS, fmt::format("snapshot {} ({}) exists, of volume {}", req->name(), uuid,
                                                                  str(cur.body, "volume")));
    }
    fill_snapshot(cur.body, resp->mutable_snapshot());
    return grpc::Status::OK;
  }
  if (cur.status != 404) return Agent::status_for(cur, "reading snapshot " + uuid);
  if (!is_uuid(vol)) return grpc::Status(StatusCode::NOT_FOUND, fmt::format("volume {} does not exist", vol));
  json body = {{"name", req->name().substr(0, 255)}};
  rest::RestReply r;
  if (auto s = agent_.expect("PUT", fmt::format("/v1/volumes/{}/snapshots/{}", vol, uuid), &body, {200, 201}, &r,
                             fmt::format("snapshotting volume {} as {}", vol, req->name()));
      !s.ok()) {
    // Refused because the volume has its maxSnapshots already: no room for one more (the CO must not
    // retry as if the volume were merely busy).
    rest::RestReply v, list;
    if (s.error_code() == StatusCode::ABORTED && agent_.call("GET", "/v1/volumes/" + vol, nullptr, &v).ok() &&
        v.status == 200 && num(v.body, "max_snapshots") > 0 &&
        agent_.call("GET", fmt::format("/v1/volumes/{}/snapshots", vol), nullptr, &list).ok() && list.status == 200 &&
        list.body.is_array() && int64_t(list.body.size()) >= num(v.body, "max_snapshots")) {
      return grpc::Status(StatusCode::RESOURCE_EXHAUSTED, s.error_message());
    }
    return s;
  }
  fill_snapshot(r.body, resp->mutable_snapshot());
  TLOG_INFO("csi", "snapshot {} ({}) of volume {} taken", req->name(), uuid, vol);
  return grpc::Status::OK;
}

grpc::Status ControllerService::DeleteSnapshot(grpc::ServerContext*, const pb::DeleteSnapshotRequest* req,
                                               pb::DeleteSnapshotResponse*) {
  const std::string& id = req->snapshot_id();
  if (id.empty()) return invalid("snapshot_id is required");
  if (!is_uuid(id)) return grpc::Status::OK;
  auto guard = busy_.try_take(id);
  if (!guard) return aborted("snapshot " + id);
  rest::RestReply r;
  return agent_.expect("DELETE", "/v1/snapshots/" + id, nullptr, {200, 204, 404}, &r, "deleting snapshot " + id);
}

grpc::Status ControllerService::ListSnapshots(grpc::ServerContext*, const pb::ListSnapshotsRequest* req,
                                              pb::ListSnapshotsResponse* resp) {
  rest::RestReply r;
  if (auto s = agent_.expect("GET", "/v1/snapshots", nullptr, {200}, &r, "listing snapshots"); !s.ok()) return s;
  std::vector<json> snaps;
  if (r.body.is_array()) {
    for (const json& s : r.body) {
      if (str(s, "state") == "deleting") continue;
      if (!req->snapshot_id().empty() && str(s, "uuid") != req->snapshot_id()) continue;
      if (!req->source_volume_id().empty() && str(s, "volume") != req->source_volume_id()) continue;
      snaps.push_back(s);
    }
  }
  std::sort(snaps.begin(), snaps.end(), [](const json& a, const json& b) { return str(a, "uuid") < str(b, "uuid"); });
  size_t begin = 0, end = 0;
  std::string next;
  if (auto s = page(snaps, req->max_entries(), req->starting_token(), &begin, &end, &next); !s.ok()) return s;
  for (size_t i = begin; i < end; i++) fill_snapshot(snaps[i], resp->add_entries()->mutable_snapshot());
  resp->set_next_token(next);
  return grpc::Status::OK;
}

grpc::Status ControllerService::ControllerExpandVolume(grpc::ServerContext*, const pb::ControllerExpandVolumeRequest* req,
                                                       pb::ControllerExpandVolumeResponse* resp) {
  const std::string& id = req->volume_id();
  if (id.empty()) return invalid("volume_id is required");
  if (!req->has_capacity_range()) return invalid("capacity_range is required");
  if (req->has_volume_capability()) {
    if (std::string why = unsupported(req->volume_capability()); !why.empty()) return invalid("volume_capability: " + why);
  }
  if (!is_uuid(id)) return grpc::Status(StatusCode::NOT_FOUND, fmt::format("volume {} does not exist", id));
  auto guard = busy_.try_take(id);
  if (!guard) return aborted("volume " + id);
  rest::RestReply cur;
  if (auto s = agent_.expect("GET", "/v1/volumes/" + id, nullptr, {200}, &cur, "volume " + id); !s.ok()) return s;
  uint64_t have = uint64_t(num(cur.body, "size"));
  auto want = size_for_range(req->capacity_range().required_bytes(), req->capacity_range().limit_bytes(), have);
  if (!want.ok()) return from(want.status());
  if (*want > have) {
    rest::RestReply r;
    if (auto s = agent_.expect("PUT", fmt::format("/v1/volumes/{}/size/{}", id, *want), nullptr, {200}, &r,
                               fmt::format("growing volume {} to {} bytes", id, *want));
        !s.ok()) {
      return s;
    }
    have = uint64_t(num(r.body, "size"));
    TLOG_INFO("csi", "volume {} grown to {} bytes", id, have);
  }
  resp->set_capacity_bytes(int64_t(have));
  resp->set_node_expansion_required(!(req->has_volume_capability() && req->volume_capability().has_block()));
  return grpc::Status::OK;
}

}  // namespace tern::csi
