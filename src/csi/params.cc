#include "csi/params.h"

#include <charconv>

#include "common/units.h"

namespace tern::csi {

namespace {

Result<uint64_t> parse_uint(const std::string& key, const std::string& v, uint64_t lo, uint64_t hi) {
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size() || n < lo || n > hi) {
    return Status::Errorf(Errc::kInval, "parameter '{}': '{}' is not a whole number from {} to {}", key, v, lo, hi);
  }
  return n;
}

Result<bool> parse_bool(const std::string& key, const std::string& v) {
  if (v == "true") return true;
  if (v == "false") return false;
  return Status::Errorf(Errc::kInval, "parameter '{}': '{}' is neither 'true' nor 'false'", key, v);
}

}  // namespace

Result<StringMap> parse_label_list(const std::string& key, const std::string& value) {
  StringMap out;
  size_t at = 0;
  while (at < value.size()) {
    size_t comma = value.find(',', at);
    if (comma == std::string::npos) comma = value.size();
    std::string kv = value.substr(at, comma - at);
    size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      return Status::Errorf(Errc::kInval, "parameter '{}': '{}' is not key=value (a list is k=v,k2=v2)", key, kv);
    }
    out[kv.substr(0, eq)] = kv.substr(eq + 1);
    at = comma + 1;
  }
  return out;
}

Result<VolumeParams> parse_parameters(const StringMap& params) {
  VolumeParams p;
  for (const auto& [k, v] : params) {
    if (k == "replicas") {
      TERN_ASSIGN_OR_RETURN(uint64_t n, parse_uint(k, v, 1, 8));
      p.replicas = uint32_t(n);
    } else if (k == "thin") {
      TERN_ASSIGN_OR_RETURN(p.thin, parse_bool(k, v));
    } else if (k == "protocol") {
      if (v != "nvmf") return Status::Errorf(Errc::kInval, "parameter 'protocol': '{}' (only 'nvmf' is served to Kubernetes nodes)", v);
      p.protocol = v;
    } else if (k == "csi.storage.k8s.io/fstype" || k == "fsType") {
      if (v != "ext4" && v != "xfs") return Status::Errorf(Errc::kInval, "parameter '{}': '{}' (ext4 or xfs)", k, v);
      p.fs_type = v;
    } else if (k == "nodeLabels") {
      TERN_ASSIGN_OR_RETURN(p.node_labels, parse_label_list(k, v));
    } else if (k == "poolLabels") {
      TERN_ASSIGN_OR_RETURN(p.pool_labels, parse_label_list(k, v));
    } else if (k == "spread") {
      size_t at = 0;
      while (at < v.size()) {
        size_t comma = v.find(',', at);
        if (comma == std::string::npos) comma = v.size();
        if (comma == at) return Status::Errorf(Errc::kInval, "parameter 'spread': '{}' has an empty label key", v);
        p.spread.push_back(v.substr(at, comma - at));
        at = comma + 1;
      }
    } else if (k == "maxSnapshots") {
      TERN_ASSIGN_OR_RETURN(uint64_t n, parse_uint(k, v, 0, 1000));
      p.max_snapshots = uint32_t(n);
    } else if (k == "rebuildRate") {
      auto n = parse_size(v);
      if (!n.ok()) return Status::Errorf(Errc::kInval, "parameter 'rebuildRate': '{}' is not a byte rate (e.g. 200MiB, 0)", v);
      if (*n != 0 && *n < (1u << 20)) {
        return Status::Errorf(Errc::kInval, "parameter 'rebuildRate': '{}' is below 1MiB per second (0: no limit)", v);
      }
      p.rebuild_rate = *n;
    } else if (k == "nvmeCtrlLossTmo") {
      TERN_ASSIGN_OR_RETURN(uint64_t n, parse_uint(k, v, 0, 86400 * 365));
      p.nvme.ctrl_loss_tmo = uint32_t(n);
    } else if (k == "nvmeKeepAliveTmo") {
      TERN_ASSIGN_OR_RETURN(uint64_t n, parse_uint(k, v, 1, 3600));
      p.nvme.keep_alive_tmo = uint32_t(n);
    } else if (k == "nvmeReconnectDelay") {
      TERN_ASSIGN_OR_RETURN(uint64_t n, parse_uint(k, v, 1, 3600));
      p.nvme.reconnect_delay = uint32_t(n);
    } else if (k == "csi.storage.k8s.io/pvc/name") {
      p.pvc_name = v;
    } else if (k == "csi.storage.k8s.io/pvc/namespace") {
      p.pvc_namespace = v;
    } else if (k == "csi.storage.k8s.io/pv/name") {
      p.pv_name = v;
    } else if (k.rfind("csi.storage.k8s.io/", 0) == 0) {
      // The sidecars' own keys (secret references and the like): not ours to judge.
    } else {
      return Status::Errorf(Errc::kInval,
                            "unknown parameter '{}' (known: replicas, thin, protocol, csi.storage.k8s.io/fstype, nodeLabels, "
                            "poolLabels, spread, maxSnapshots, rebuildRate, nvmeCtrlLossTmo, nvmeKeepAliveTmo, "
                            "nvmeReconnectDelay)",
                            k);
    }
  }
  return p;
}

StringMap volume_context(const VolumeParams& p) {
  return {{"protocol", p.protocol},
          {"fsType", p.fs_type},
          {"nvmeCtrlLossTmo", std::to_string(p.nvme.ctrl_loss_tmo)},
          {"nvmeKeepAliveTmo", std::to_string(p.nvme.keep_alive_tmo)},
          {"nvmeReconnectDelay", std::to_string(p.nvme.reconnect_delay)}};
}

Result<NvmeTunables> nvme_tunables(const StringMap& ctx) {
  NvmeTunables t;
  auto get = [&](const char* key, uint64_t lo, uint64_t hi, uint32_t* out) -> Status {
    auto it = ctx.find(key);
    if (it == ctx.end()) return Status::Ok();
    auto n = parse_uint(key, it->second, lo, hi);
    if (!n.ok()) return n.status();
    *out = uint32_t(*n);
    return Status::Ok();
  };
  TERN_RETURN_IF_ERROR(get("nvmeCtrlLossTmo", 0, 86400 * 365, &t.ctrl_loss_tmo));
  TERN_RETURN_IF_ERROR(get("nvmeKeepAliveTmo", 1, 3600, &t.keep_alive_tmo));
  TERN_RETURN_IF_ERROR(get("nvmeReconnectDelay", 1, 3600, &t.reconnect_delay));
  return t;
}

Result<uint64_t> size_for_range(int64_t required, int64_t limit, uint64_t fallback) {
  if (required < 0 || limit < 0) return Status(Errc::kInval, "capacity_range: negative bytes");
  constexpr uint64_t kAlign = 4096;
  uint64_t size = required > 0 ? (uint64_t(required) + kAlign - 1) / kAlign * kAlign : fallback;
  if (limit > 0 && size > uint64_t(limit)) {
    if (required > 0) {
      return Status::Errorf(Errc::kRange, "capacity_range: {} bytes rounded up to 4 KiB ({}) exceeds the limit {}", required,
                            size, limit);
    }
    size = uint64_t(limit) / kAlign * kAlign;
    if (size == 0) return Status::Errorf(Errc::kRange, "capacity_range: limit {} is below 4 KiB", limit);
  }
  return size;
}

}  // namespace tern::csi
