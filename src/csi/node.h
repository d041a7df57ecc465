// The CSI Node service: on the node that runs the pod, it connects the kernel's NVMe/TCP host to the
// volume's target (nvme-cli), finds the namespace by its NGUID (the volume's UUID; never a guessed device
// name), makes a file system only on a device without one, mounts it at the staging path, and bind-mounts
// it (or the raw device) into pods. Unstage unmounts and disconnects. Expansion grows a mounted file
// system online; stats give bytes, inodes and the volume's health.
//
// Every call is idempotent: it looks at what the host already has (mount table, sysfs) before acting, so
// a call retried after a crash of the plugin finishes the work instead of failing on the half done.
//
// Threads: gRPC's (synchronous server); calls for the same volume do not overlap (InFlight: ABORTED).
#pragma once

#include <memory>
#include <string>

#include "csi/agent.h"
#include "csi/inflight.h"
#include "csi/params.h"
#include "csi/v1/csi.grpc.pb.h"

namespace tern::csi {

namespace pb = ::csi::v1;

struct NodeOptions {
  std::string node_name;  // the Kubernetes node's name
  std::string host_nqn;   // /etc/nvme/hostnqn's
  std::string sys_root = "/sys";
  int attach_timeout_s = 60;  // connect and wait for the namespace to appear
  int tool_timeout_s = 600;   // mkfs, resize2fs, xfs_growfs on a big volume
};

class NodeService final : public pb::Node::Service {
 public:
  // `agent` may be null: the volume's health then comes from the host's paths only.
  NodeService(NodeOptions o, const Agent* agent) : o_(std::move(o)), agent_(agent) {}

  grpc::Status NodeStageVolume(grpc::ServerContext*, const pb::NodeStageVolumeRequest*, pb::NodeStageVolumeResponse*) override;
  grpc::Status NodeUnstageVolume(grpc::ServerContext*, const pb::NodeUnstageVolumeRequest*,
                                 pb::NodeUnstageVolumeResponse*) override;
  grpc::Status NodePublishVolume(grpc::ServerContext*, const pb::NodePublishVolumeRequest*,
                                 pb::NodePublishVolumeResponse*) override;
  grpc::Status NodeUnpublishVolume(grpc::ServerContext*, const pb::NodeUnpublishVolumeRequest*,
                                   pb::NodeUnpublishVolumeResponse*) override;
  grpc::Status NodeGetVolumeStats(grpc::ServerContext*, const pb::NodeGetVolumeStatsRequest*,
                                  pb::NodeGetVolumeStatsResponse*) override;
  grpc::Status NodeExpandVolume(grpc::ServerContext*, const pb::NodeExpandVolumeRequest*, pb::NodeExpandVolumeResponse*) override;
  grpc::Status NodeGetCapabilities(grpc::ServerContext*, const pb::NodeGetCapabilitiesRequest*,
                                   pb::NodeGetCapabilitiesResponse*) override;
  grpc::Status NodeGetInfo(grpc::ServerContext*, const pb::NodeGetInfoRequest*, pb::NodeGetInfoResponse*) override;

 private:
  // Connects to the target (unless a live path to that address exists) and waits for the namespace;
  // its device path ("/dev/nvme2n1").
  grpc::Status attach(const std::string& volume_id, const std::string& uri, const NvmeTunables& t, std::string* dev);
  // The volume's namespace device, if the host has it.
  std::optional<std::string> device_of(const std::string& volume_id) const;
  void health(const std::string& volume_id, pb::VolumeCondition* c) const;

  NodeOptions o_;
  const Agent* agent_;
  InFlight busy_;
};

// The topology key every node plugin reports (its node's name).
inline constexpr const char* kTopologyKey = "io.tern.csi/node";

}  // namespace tern::csi
