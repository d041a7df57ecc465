// The CSI Controller service: volumes, their publishing to a node's host NQN, expansion and snapshots,
// each call turned into calls of the core agent's REST API (docs/api/rest-v1.openapi.json). It keeps no
// state of its own: what exists is what the agent says, so a restarted controller carries on where the
// last one stopped, and every call is idempotent as the specification asks (same name, same volume).
//
// Threads: gRPC's (synchronous server, a thread per call in flight); calls for the same volume or
// snapshot do not overlap (InFlight: the second is ABORTED).
#pragma once

#include "csi/agent.h"
#include "csi/inflight.h"
#include "csi/v1/csi.grpc.pb.h"

namespace tern::csi {

namespace pb = ::csi::v1;

class ControllerService final : public pb::Controller::Service {
 public:
  explicit ControllerService(const Agent& agent) : agent_(agent) {}

  grpc::Status CreateVolume(grpc::ServerContext*, const pb::CreateVolumeRequest*, pb::CreateVolumeResponse*) override;
  grpc::Status DeleteVolume(grpc::ServerContext*, const pb::DeleteVolumeRequest*, pb::DeleteVolumeResponse*) override;
  grpc::Status ControllerPublishVolume(grpc::ServerContext*, const pb::ControllerPublishVolumeRequest*,
                                       pb::ControllerPublishVolumeResponse*) override;
  grpc::Status ControllerUnpublishVolume(grpc::ServerContext*, const pb::ControllerUnpublishVolumeRequest*,
                                         pb::ControllerUnpublishVolumeResponse*) override;
  grpc::Status ValidateVolumeCapabilities(grpc::ServerContext*, const pb::ValidateVolumeCapabilitiesRequest*,
                                          pb::ValidateVolumeCapabilitiesResponse*) override;
  grpc::Status ListVolumes(grpc::ServerContext*, const pb::ListVolumesRequest*, pb::ListVolumesResponse*) override;
  grpc::Status GetCapacity(grpc::ServerContext*, const pb::GetCapacityRequest*, pb::GetCapacityResponse*) override;
  grpc::Status ControllerGetCapabilities(grpc::ServerContext*, const pb::ControllerGetCapabilitiesRequest*,
                                         pb::ControllerGetCapabilitiesResponse*) override;
  grpc::Status CreateSnapshot(grpc::ServerContext*, const pb::CreateSnapshotRequest*, pb::CreateSnapshotResponse*) override;
  grpc::Status DeleteSnapshot(grpc::ServerContext*, const pb::DeleteSnapshotRequest*, pb::DeleteSnapshotResponse*) override;
  grpc::Status ListSnapshots(grpc::ServerContext*, const pb::ListSnapshotsRequest*, pb::ListSnapshotsResponse*) override;
  grpc::Status ControllerExpandVolume(grpc::ServerContext*, const pb::ControllerExpandVolumeRequest*,
                                      pb::ControllerExpandVolumeResponse*) override;
  grpc::Status ControllerGetVolume(grpc::ServerContext*, const pb::ControllerGetVolumeRequest*,
                                   pb::ControllerGetVolumeResponse*) override;

 private:
  const Agent& agent_;
  InFlight busy_;
};

// A capability tern serves: a single-node access mode, block or a mount with ext4/xfs (or none given).
// An empty string when supported, else why not.
std::string unsupported(const pb::VolumeCapability& c);

}  // namespace tern::csi
