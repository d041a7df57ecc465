#include "csi/identity.h"

#include "csi/ids.h"

namespace tern::csi {

namespace pb = ::csi::v1;

grpc::Status IdentityService::GetPluginInfo(grpc::ServerContext*, const pb::GetPluginInfoRequest*,
                                            pb::GetPluginInfoResponse* resp) {
  resp->set_name(kDriverName);
  resp->set_vendor_version(TERN_VERSION);
  (*resp->mutable_manifest())["git"] = TERN_GIT_REV;
  return grpc::Status::OK;
}

grpc::Status IdentityService::GetPluginCapabilities(grpc::ServerContext*, const pb::GetPluginCapabilitiesRequest*,
                                                    pb::GetPluginCapabilitiesResponse* resp) {
  resp->add_capabilities()->mutable_service()->set_type(pb::PluginCapability::Service::CONTROLLER_SERVICE);
  resp->add_capabilities()->mutable_service()->set_type(pb::PluginCapability::Service::VOLUME_ACCESSIBILITY_CONSTRAINTS);
  resp->add_capabilities()->mutable_volume_expansion()->set_type(pb::PluginCapability::VolumeExpansion::ONLINE);
  return grpc::Status::OK;
}

grpc::Status IdentityService::Probe(grpc::ServerContext*, const pb::ProbeRequest*, pb::ProbeResponse* resp) {
  resp->mutable_ready()->set_value(true);
  return grpc::Status::OK;
}

}  // namespace tern::csi
