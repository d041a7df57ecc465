#include "kube/diskpool_operator.h"

#include <fmt/format.h>

#include <chrono>
#include <ctime>
#include <set>

#include "common/log.h"

namespace tern::kube {

using nlohmann::json;

namespace {

constexpr const char* kMergePatch = "application/merge-patch+json";

std::string rfc3339_now() {
  std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The agent is not the leader (any more): nothing to report, the leader acts.
bool standby(const Status& s) { return s.code() == Errc::kAgain; }

// At most `n` bytes of `s`, not cutting a UTF-8 sequence.
std::string clip(const std::string& s, size_t n) {
  if (s.size() <= n) return s;
  while (n > 0 && (uint8_t(s[n]) & 0xC0) == 0x80) n--;
  return s.substr(0, n);
}

std::string str_field(const json& j, const char* key) {
  auto it = j.is_object() ? j.find(key) : j.end();
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

DiskPoolOperator::DiskPoolOperator(KubeClient& kube, PoolBackend& pools, OperatorOptions opts)
    : kube_(kube), pools_(pools), opts_(std::move(opts)) {}

DiskPoolOperator::~DiskPoolOperator() { stop(); }

void DiskPoolOperator::start() {
  TLOG_INFO("kube", "DiskPools: watching namespace {} at {} (resync every {} s)", kube_.config().ns, kube_.config().api,
            opts_.resync_s);
  thread_ = std::thread([this] { run(); });
}

void DiskPoolOperator::request_stop() {
  {
    std::lock_guard l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
}

void DiskPoolOperator::stop() {
  request_stop();
  if (thread_.joinable()) thread_.join();
}

bool DiskPoolOperator::sleep_for(double s) {
  std::unique_lock l(mu_);
  cv_.wait_for(l, std::chrono::duration<double>(s), [this] { return stop_.load(); });
  return !stop_;
}

std::string DiskPoolOperator::collection() const {
  return fmt::format("/apis/{}/namespaces/{}/diskpools", kGroupVersion, kube_.config().ns);
}

void DiskPoolOperator::warn_once(const std::string& what) {
  if (what == last_warning_) {
    TLOG_DEBUG("kube", "DiskPools: {}", what);
    return;
  }
  last_warning_ = what;
  TLOG_WARN("kube", "DiskPools: {}", what);
}

void DiskPoolOperator::run() {
  while (!stop_) {
    try {
      loop();
    } catch (const std::exception& e) {
      // Nothing here should throw; if something does, the agent keeps leading and the loop starts again.
      TLOG_ERROR("kube", "DiskPools: {} (starting again in 5 s)", e.what());
      written_.clear();
      sleep_for(5);
    }
  }
}

void DiskPoolOperator::loop() {
  double backoff = 1, watch_backoff = 1;
  while (!stop_) {
    if (!pools_.leading()) {
      written_.clear();  // another leader may write statuses meanwhile
      if (!sleep_for(1)) break;
      continue;
    }
    std::string rv;
    if (Status s = resync(&rv); !s.ok()) {
      warn_once(fmt::format("{} (again in {} s)", s.message(), backoff));
      if (!sleep_for(backoff)) break;
      backoff = std::min(backoff * 2, opts_.max_backoff_s);
      continue;
    }
    backoff = 1;
    // Watch until the resync: the server ends the watch after timeoutSeconds.
    const int timeout_s = std::max(1, int(opts_.resync_s));
    std::string path = fmt::format("{}?watch=true&allowWatchBookmarks=true&resourceVersion={}&timeoutSeconds={}", collection(),
                                   rv, timeout_s);
    const auto began = std::chrono::steady_clock::now();
    bool expired = false;
    Status s = kube_.watch(
        path,
        [&](std::string_view line) {
          auto e = parse_watch_event(line);
          if (!e.ok()) {
            TLOG_WARN("kube", "DiskPools: watch: {}", e.status().message());
            return false;
          }
          if (e->type == "ERROR") {
            // 410 Gone: the resourceVersion is too old; the next list starts afresh.
            expired = e->code == 410;
            if (!expired) TLOG_WARN("kube", "DiskPools: watch: {}", str_field(e->object, "message"));
            return false;
          }
          if (e->type == "DELETED") {
            written_.erase(str_field(e->object.value("metadata", json::object()), "uid"));
            return true;
          }
          if (e->type != "ADDED" && e->type != "MODIFIED") return true;  // BOOKMARK
          auto dp = parse_diskpool(e->object);
          if (!dp.ok()) {
            TLOG_WARN("kube", "DiskPools: an object in the watch: {}", dp.status().message());
            return true;
          }
          reconcile(std::move(*dp));
          return !stop_.load();
        },
        stop_, timeout_s + 30);
    if (s.code() == Errc::kCanceled) break;
    if (!s.ok()) TLOG_DEBUG("kube", "DiskPools: the watch ended: {}", s.message());
    // A watch that failed or ended at once (an error event, a server refusing watches) is not repeated in a
    // tight loop of lists: it backs off. An expired one is listed again at once.
    const bool short_lived = std::chrono::steady_clock::now() - began < std::chrono::seconds(1);
    if (!expired && (!s.ok() || short_lived)) {
      if (!sleep_for(watch_backoff)) break;
      watch_backoff = std::min(watch_backoff * 2, opts_.max_backoff_s);
    } else {
      watch_backoff = 1;
    }
  }
}

Status DiskPoolOperator::resync(std::string* rv) {
  auto r = kube_.call("GET", collection());
  if (!r.ok()) return Status::Errorf(r.code(), "listing DiskPools at {}: {}", kube_.config().api, r.status().message());
  if (r->status == 404) {
    return Status::Errorf(Errc::kNoEnt, "listing DiskPools: {} (is the DiskPool CRD installed? crds.install in the chart)",
                          r->message());
  }
  if (r->status == 401 || r->status == 403) {
    return Status::Errorf(Errc::kAccess, "listing DiskPools: {} (the agent's service account needs the chart's Role)",
                          r->message());
  }
  if (r->status != 200 || !r->body.is_object() || !r->body.contains("items") || !r->body["items"].is_array()) {
    return Status::Errorf(Errc::kProto, "listing DiskPools: {}", r->message());
  }
  if (!last_warning_.empty()) {
    TLOG_INFO("kube", "DiskPools: the API server answers again");
    last_warning_.clear();
  }
  if (rv) {
    const json& md = r->body.contains("metadata") ? r->body["metadata"] : json();
    *rv = str_field(md, "resourceVersion");
  }
  std::set<std::string> listed;
  for (const json& item : r->body["items"]) {
    if (stop_) break;
    auto dp = parse_diskpool(item);
    if (!dp.ok()) {
      TLOG_WARN("kube", "DiskPools: an item of the list: {}", dp.status().message());
      continue;
    }
    if (dp->ns.empty()) dp->ns = kube_.config().ns;
    listed.insert(dp->uid);
    reconcile(std::move(*dp));
  }
  for (auto it = written_.begin(); it != written_.end();) it = listed.count(it->first) ? std::next(it) : written_.erase(it);
  return Status::Ok();
}

bool DiskPoolOperator::patch(const DiskPool& dp, const std::string& sub, const json& body, DiskPool* updated) {
  if (stop_) return false;
  std::string path = fmt::format("{}/{}{}", collection(), dp.name, sub);
  auto r = kube_.call("PATCH", path, &body, kMergePatch);
  if (!r.ok()) {
    TLOG_WARN("kube", "DiskPool {}: patch{}: {}", dp.name, sub, r.status().message());
    return false;
  }
  if (r->status == 409 || r->status == 404) {
    // Changed or gone in between: the watch brings the new object (or its deletion).
    TLOG_DEBUG("kube", "DiskPool {}: patch{}: {}", dp.name, sub, r->message());
    return false;
  }
  if (r->status != 200) {
    TLOG_WARN("kube", "DiskPool {}: patch{}: {}", dp.name, sub, r->message());
    return false;
  }
  if (updated) {
    auto u = parse_diskpool(r->body);
    if (!u.ok()) {
      TLOG_WARN("kube", "DiskPool {}: patch{}: the answer: {}", dp.name, sub, u.status().message());
      return false;
    }
    *updated = std::move(*u);
  }
  return true;
}

void DiskPoolOperator::reconcile(DiskPool dp) {
  // Only the leader writes anything, the finalizer included.
  if (stop_ || !pools_.leading()) return;
  if (dp.deleting) {
    if (dp.has_finalizer()) finalize(dp);
    return;
  }
  if (!dp.has_finalizer()) {
    DiskPool updated;
    if (!patch(dp, "", finalizer_patch(dp, true), &updated)) return;
    dp = std::move(updated);
  }
  if (Status s = validate_spec(dp); !s.ok()) {
    set_status(dp, pool_status(dp, nullptr, "Error", std::string(s.message())));
    return;
  }
  const std::string disk = dp.disk_uri();
  auto v = pools_.get(dp.name);
  if (!v.ok() && v.code() != Errc::kNoEnt) {
    if (!standby(v.status())) TLOG_WARN("kube", "DiskPool {}: {}", dp.name, v.status().message());
    return;
  }
  if (v.ok() && (v->node != dp.node || v->disk != disk)) {
    set_status(dp, pool_status(dp, nullptr, "Error",
                               fmt::format("pool '{}' exists on node {} with disk {}, not on node {} with disk {}: a pool "
                                           "does not move (delete this DiskPool; declare the disk under another name)",
                                           dp.name, v->node, v->disk, dp.node, disk)));
    return;
  }
  if (!v.ok() || v->labels != dp.labels) {
    auto d = pools_.declare(dp.name, dp.node, disk, dp.labels);
    if (!d.ok()) {
      if (standby(d.status())) return;
      set_status(dp, pool_status(dp, nullptr, "Error", std::string(d.status().message())));
      return;
    }
    if (!v.ok()) TLOG_INFO("kube", "DiskPool {}: pool declared on node {} with disk {}", dp.name, dp.node, disk);
    v = std::move(d);
  }
  set_status(dp, pool_status(dp, &*v, "", ""));
}

void DiskPoolOperator::finalize(const DiskPool& dp) {
  std::string what;
  if (dp.retain) {
    what = "the pool is kept (tern.io/retain-pool)";
  } else {
    // Only the pool this DiskPool describes (checked by the agent in the same step as the destruction):
    // one of that name elsewhere was never its own.
    Status s = pools_.destroy(dp.name, dp.node, dp.disk_uri());
    if (s.ok()) {
      what = fmt::format("pool destroyed on node {}", dp.node);
      TLOG_INFO("kube", "DiskPool {}: {}", dp.name, what);
    } else if (s.code() == Errc::kNoEnt) {
      what = "no pool to destroy";
    } else if (s.code() == Errc::kExist) {
      what = fmt::format("no pool of its own to destroy ({})", s.message());
    } else {
      if (standby(s)) return;
      auto v = pools_.get(dp.name);
      set_status(dp, pool_status(dp, v.ok() ? &*v : nullptr, "Deleting", std::string(s.message())));
      return;
    }
  }
  if (patch(dp, "", finalizer_patch(dp, false), nullptr)) {
    written_.erase(dp.uid);
    event(dp, false, "Deleted", what);
  }
}

void DiskPoolOperator::set_status(const DiskPool& dp, const json& desired) {
  // What the object's status is: what this leader last wrote, when it wrote one (an event may carry the
  // object from before that write), else what the object says.
  auto w = written_.find(dp.uid);
  const json& current = w != written_.end() ? w->second : dp.status;
  if (current == desired) return;
  const std::string old_state = str_field(current, "state"), old_reason = str_field(current, "reason");
  if (!patch(dp, "/status", status_patch(current, desired), nullptr)) {
    written_.erase(dp.uid);  // not known any more: the next event's object says
    return;
  }
  written_[dp.uid] = desired;
  const std::string state = str_field(desired, "state"), reason = str_field(desired, "reason");
  if (state == old_state && reason == old_reason) return;
  if (state == "Error") {
    TLOG_WARN("kube", "DiskPool {}: {}", dp.name, reason);
    event(dp, true, "Failed", reason);
  } else if (state == "Deleting" && !reason.empty()) {
    event(dp, true, "DeleteBlocked", reason);
  } else if (state == "Created" && old_state != "Created") {
    event(dp, false, "Created",
          fmt::format("pool on node {} with disk {}{}", dp.node, dp.disk_uri(),
                      desired.contains("capacity") ? fmt::format(", {} bytes", desired["capacity"].dump()) : ""));
  } else if (!reason.empty()) {
    event(dp, false, state, reason);
  }
}

void DiskPoolOperator::event(const DiskPool& dp, bool warning, const std::string& reason, const std::string& message) {
  if (stop_) return;
  const std::string now = rfc3339_now();
  json e = {{"apiVersion", "v1"},
            {"kind", "Event"},
            {"metadata", {{"generateName", dp.name + "."}, {"namespace", kube_.config().ns}}},
            {"involvedObject",
             {{"apiVersion", std::string(kGroupVersion)},
              {"kind", "DiskPool"},
              {"name", dp.name},
              {"namespace", kube_.config().ns},
              {"uid", dp.uid},
              {"resourceVersion", dp.resource_version}}},
            {"reason", reason},
            {"message", clip(message, 1024)},
            {"type", warning ? "Warning" : "Normal"},
            {"firstTimestamp", now},
            {"lastTimestamp", now},
            {"count", 1},
            {"source", {{"component", "tern-agent"}}},
            {"reportingComponent", "tern.io/agent"},
            {"reportingInstance", opts_.instance}};
  auto r = kube_.call("POST", fmt::format("/api/v1/namespaces/{}/events", kube_.config().ns), &e);
  if (!r.ok() || r->status / 100 != 2) {
    TLOG_DEBUG("kube", "DiskPool {}: event {}: {}", dp.name, reason, r.ok() ? r->message() : std::string(r.status().message()));
  }
}

}  // namespace tern::kube
