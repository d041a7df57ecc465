#include "kube/diskpool.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

namespace tern::kube {

using nlohmann::json;

namespace {

const json* field(const json& o, const char* name) {
  if (!o.is_object()) return nullptr;
  auto it = o.find(name);
  return it == o.end() || it->is_null() ? nullptr : &*it;
}

Result<std::string> opt_string(const json& o, const char* name, const char* path) {
  const json* f = field(o, name);
  if (!f) return std::string();
  if (!f->is_string()) return Status::Errorf(Errc::kInval, "{}: not a string", path);
  return f->get<std::string>();
}

std::string str_or_empty(const json& o, const char* name) {
  const json* f = field(o, name);
  return f && f->is_string() ? f->get<std::string>() : std::string();
}

// A non-negative integer field.
std::optional<uint64_t> count(const json& o, const char* name) {
  const json* f = field(o, name);
  if (!f || !f->is_number_integer()) return std::nullopt;
  if (f->is_number_unsigned()) return f->get<uint64_t>();
  int64_t v = f->get<int64_t>();
  return v >= 0 ? std::optional<uint64_t>(uint64_t(v)) : std::nullopt;
}

}  // namespace

bool DiskPool::has_finalizer() const {
  return std::find(finalizers.begin(), finalizers.end(), kFinalizer) != finalizers.end();
}

std::string DiskPool::disk_uri() const {
  if (disks.empty()) return "";
  const std::string& d = disks.front();
  return !d.empty() && d.front() == '/' ? "uring://" + d : d;
}

Result<DiskPool> parse_diskpool(const json& obj) {
  if (!obj.is_object()) return Status(Errc::kInval, "a DiskPool: not a JSON object");
  auto kind = opt_string(obj, "kind", "kind");
  if (!kind.ok()) return kind.status();
  if (!kind->empty() && *kind != "DiskPool") return Status::Errorf(Errc::kInval, "kind: '{}', not DiskPool", *kind);
  const json* md = field(obj, "metadata");
  if (!md || !md->is_object()) return Status(Errc::kInval, "metadata: missing");
  DiskPool dp;
  auto name = opt_string(*md, "name", "metadata.name");
  if (!name.ok()) return name.status();
  if (name->empty()) return Status(Errc::kInval, "metadata.name: missing");
  dp.name = *name;
  for (auto [key, out, path] : {std::tuple{"namespace", &dp.ns, "metadata.namespace"},
                                std::tuple{"uid", &dp.uid, "metadata.uid"},
                                std::tuple{"resourceVersion", &dp.resource_version, "metadata.resourceVersion"}}) {
    auto v = opt_string(*md, key, path);
    if (!v.ok()) return v.status();
    *out = *v;
  }
  if (const json* g = field(*md, "generation")) {
    if (!g->is_number_integer()) return Status(Errc::kInval, "metadata.generation: not an integer");
    dp.generation = g->get<int64_t>();
  }
  dp.deleting = field(*md, "deletionTimestamp") != nullptr;
  if (const json* a = field(*md, "annotations")) {
    if (!a->is_object()) return Status(Errc::kInval, "metadata.annotations: not an object");
    dp.retain = str_or_empty(*a, std::string(kRetainAnnotation).c_str()) == "true";
  }
  if (const json* f = field(*md, "finalizers")) {
    if (!f->is_array()) return Status(Errc::kInval, "metadata.finalizers: not a list");
    for (const json& e : *f) {
      if (!e.is_string()) return Status(Errc::kInval, "metadata.finalizers: an item is not a string");
      dp.finalizers.push_back(e.get<std::string>());
    }
  }
  if (const json* st = field(obj, "status"); st && st->is_object()) dp.status = *st;

  // The spec: what is wrong with it is kept for validate_spec (and the status), not a parse error.
  const json* spec = field(obj, "spec");
  if (!spec) {
    dp.spec_error = "spec: missing";
    return dp;
  }
  if (!spec->is_object()) {
    dp.spec_error = "spec: not an object";
    return dp;
  }
  if (const json* n = field(*spec, "node")) {
    if (n->is_string()) {
      dp.node = n->get<std::string>();
    } else {
      dp.spec_error = "spec.node: not a string";
    }
  }
  if (const json* d = field(*spec, "disks")) {
    if (!d->is_array()) {
      dp.spec_error = "spec.disks: not a list";
    } else {
      for (size_t i = 0; i < d->size(); i++) {
        if (!(*d)[i].is_string()) {
          dp.spec_error = fmt::format("spec.disks[{}]: not a string", i);
          break;
        }
        dp.disks.push_back((*d)[i].get<std::string>());
      }
    }
  }
  if (const json* l = field(*spec, "labels")) {
    if (!l->is_object()) {
      dp.spec_error = "spec.labels: not an object";
    } else {
      for (auto it = l->begin(); it != l->end(); ++it) {
        if (!it->is_string()) {
          dp.spec_error = fmt::format("spec.labels.{}: not a string", it.key());
          break;
        }
        dp.labels[it.key()] = it->get<std::string>();
      }
    }
  }
  return dp;
}

Status validate_spec(const DiskPool& dp) {
  if (!dp.spec_error.empty()) return Status(Errc::kInval, dp.spec_error);
  if (dp.node.empty()) return Status(Errc::kInval, "spec.node: required (the storage node's name)");
  if (dp.disks.size() != 1) {
    return Status::Errorf(Errc::kInval, "spec.disks: exactly one disk per pool ({} given)", dp.disks.size());
  }
  const std::string& d = dp.disks.front();
  if (d.empty()) return Status(Errc::kInval, "spec.disks[0]: empty");
  if (d.front() != '/' && d.find("://") == std::string::npos) {
    return Status::Errorf(Errc::kInval, "spec.disks[0]: '{}' is neither a path nor a device URI (uring:///dev/...)", d);
  }
  return Status::Ok();
}

Result<PoolView> PoolView::FromJson(const json& j) {
  if (!j.is_object()) return Status(Errc::kInval, "pool: not an object");
  PoolView v;
  for (auto [key, out] : {std::pair{"node", &v.node}, std::pair{"disk", &v.disk}, std::pair{"state", &v.state},
                          std::pair{"status", &v.status}}) {
    const json* f = field(j, key);
    if (!f || !f->is_string()) return Status::Errorf(Errc::kInval, "pool.{}: missing", key);
    *out = f->get<std::string>();
  }
  if (const json* r = field(j, "reason"); r && r->is_string()) v.reason = r->get<std::string>();
  if (const json* l = field(j, "labels"); l && l->is_object()) {
    for (auto it = l->begin(); it != l->end(); ++it) {
      if (it->is_string()) v.labels[it.key()] = it->get<std::string>();
    }
  }
  for (auto [key, out] : {std::pair{"capacity", &v.capacity}, std::pair{"used", &v.used}, std::pair{"committed", &v.committed}}) {
    if (auto n = count(j, key)) *out = *n;
  }
  if (auto n = count(j, "replicas")) v.replicas = uint32_t(std::min<uint64_t>(*n, UINT32_MAX));
  return v;
}

json pool_status(const DiskPool& dp, const PoolView* pool, std::string state, std::string reason) {
  static const std::set<std::string> kPoolStatuses = {"online",  "degraded", "offline", "missing",
                                                      "unknown", "creating", "deleting"};
  json s = json::object();
  if (state.empty()) {
    state = !pool                         ? "Creating"
            : pool->state == "created"    ? "Created"
            : pool->state == "deleting"   ? "Deleting"
                                          : "Creating";
  }
  s["state"] = state;
  if (pool) {
    s["poolStatus"] = kPoolStatuses.count(pool->status) ? pool->status : "unknown";
    if (pool->capacity) s["capacity"] = *pool->capacity;
    if (pool->used) s["used"] = *pool->used;
    if (pool->committed) s["committed"] = *pool->committed;
    s["replicas"] = pool->replicas;
    if (reason.empty()) reason = pool->reason;
    if (reason.empty() && pool->status == "offline") reason = fmt::format("node '{}' is offline", pool->node);
  }
  if (!reason.empty()) s["reason"] = reason;
  if (dp.generation > 0) s["observedGeneration"] = dp.generation;
  return s;
}

json status_patch(const json& current, const json& desired) {
  json st = desired;
  if (current.is_object()) {
    for (auto it = current.begin(); it != current.end(); ++it) {
      if (!desired.contains(it.key())) st[it.key()] = nullptr;
    }
  }
  return json{{"status", st}};
}

json finalizer_patch(const DiskPool& dp, bool add) {
  json list = json::array();
  for (const std::string& f : dp.finalizers) {
    if (f != kFinalizer) list.push_back(f);
  }
  if (add) list.push_back(std::string(kFinalizer));
  json md = {{"finalizers", list}};
  if (!dp.resource_version.empty()) md["resourceVersion"] = dp.resource_version;
  return json{{"metadata", md}};
}

Status LineSplitter::feed(std::string_view data, std::vector<std::string>& out) {
  while (!data.empty()) {
    size_t nl = data.find('\n');
    std::string_view piece = data.substr(0, nl);
    if (partial_.size() + piece.size() > max_line_) {
      partial_.clear();
      return Status::Errorf(Errc::kInval, "a watch event longer than {} bytes", max_line_);
    }
    partial_.append(piece);
    if (nl == std::string_view::npos) break;
    data.remove_prefix(nl + 1);
    if (!partial_.empty() && partial_.back() == '\r') partial_.pop_back();
    if (!partial_.empty()) out.push_back(std::move(partial_));
    partial_.clear();
  }
  return Status::Ok();
}

Result<WatchEvent> parse_watch_event(std::string_view line) {
  json j = json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status(Errc::kInval, "a watch event that is not a JSON object");
  const json* t = field(j, "type");
  if (!t || !t->is_string()) return Status(Errc::kInval, "a watch event without a type");
  WatchEvent e;
  e.type = t->get<std::string>();
  const json* o = field(j, "object");
  if (!o || !o->is_object()) return Status::Errorf(Errc::kInval, "a {} event without an object", e.type);
  e.object = *o;
  if (const json* md = field(*o, "metadata")) {
    if (const json* rv = field(*md, "resourceVersion"); rv && rv->is_string()) e.resource_version = rv->get<std::string>();
  }
  if (e.type == "ERROR") {
    if (const json* c = field(*o, "code"); c && c->is_number_integer()) e.code = int(std::clamp<int64_t>(c->get<int64_t>(), 0, 999));
  }
  return e;
}

}  // namespace tern::kube
