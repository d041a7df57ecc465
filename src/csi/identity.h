// The CSI Identity service: the driver's name (io.tern.csi) and version, its capabilities (the same in
// both modes, as the specification asks), and Probe (ready once serving; the agent's health is not the
// plugin's, so an unreachable agent does not fail the liveness probe). Threads: gRPC's.
#pragma once

#include "csi/v1/csi.grpc.pb.h"

namespace tern::csi {

class IdentityService final : public ::csi::v1::Identity::Service {
 public:
  grpc::Status GetPluginInfo(grpc::ServerContext*, const ::csi::v1::GetPluginInfoRequest*,
                             ::csi::v1::GetPluginInfoResponse*) override;
  grpc::Status GetPluginCapabilities(grpc::ServerContext*, const ::csi::v1::GetPluginCapabilitiesRequest*,
                                     ::csi::v1::GetPluginCapabilitiesResponse*) override;
  grpc::Status Probe(grpc::ServerContext*, const ::csi::v1::ProbeRequest*, ::csi::v1::ProbeResponse*) override;
};

}  // namespace tern::csi
