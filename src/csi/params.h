// What tern-csi reads from a StorageClass (CreateVolume's parameters) and from a volume's context: pure
// parsing and validation, unit-tested. Every value is a string (Kubernetes' rule); an unknown key or a bad
// value is an error naming the key, so a typo in a StorageClass fails the claim instead of being ignored.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace tern::csi {

using StringMap = std::map<std::string, std::string>;

// The kernel host's NVMe/TCP connection tunables (nvme connect's options), in seconds.
struct NvmeTunables {
  uint32_t ctrl_loss_tmo = 1800;  // how long a lost path keeps reconnecting before its I/O fails
  uint32_t keep_alive_tmo = 5;    // how soon a dead target is noticed
  uint32_t reconnect_delay = 2;   // between reconnect attempts
};

struct VolumeParams {
  uint32_t replicas = 1;
  bool thin = false;
  std::string protocol = "nvmf";
  std::string fs_type = "ext4";
  StringMap node_labels, pool_labels;
  std::vector<std::string> spread;
  std::optional<uint32_t> max_snapshots;
  std::optional<uint64_t> rebuild_rate;  // bytes per second; 0: no limit
  NvmeTunables nvme;
  // The provisioner's --extra-create-metadata: the claim's name and namespace, the PV's name.
  std::string pvc_name, pvc_namespace, pv_name;
};

// The StorageClass parameters (docs/kubernetes.md, "StorageClass parameters").
Result<VolumeParams> parse_parameters(const StringMap& params);

// The volume context tern-csi returns from CreateVolume (what NodeStage needs: the NVMe tunables and the
// file system), and its parsing back on the node (missing keys take the defaults).
StringMap volume_context(const VolumeParams& p);
Result<NvmeTunables> nvme_tunables(const StringMap& volume_context);

// "k=v,k2=v2" -> map; an empty string is an empty map.
Result<StringMap> parse_label_list(const std::string& key, const std::string& value);

// The volume's size in bytes for a CSI capacity range: required rounded up to 4 KiB, or `fallback` when
// neither bound is given; kRange when no multiple of 4 KiB fits between the bounds.
Result<uint64_t> size_for_range(int64_t required, int64_t limit, uint64_t fallback);

}  // namespace tern::csi
