// Translation between the API's protobuf messages (proto/tern/engine/v1) and the engine's domain types
// (engine/types.h), for the gRPC services — the only code that sees both. Text the API carries for a
// typed value (a UUID) is parsed here; a bad one is kInval naming the field, as the engine words it.
//
// Plain functions on values: any thread.
#pragma once

#include <string>
#include <vector>

#include "bdev/fault_bdevs.h"
#include "common/result.h"
#include "engine/nexus_manager.h"
#include "engine/types.h"
#include "nvmf/target/target.h"
#include "tern/engine/v1/bdev.pb.h"
#include "tern/engine/v1/nexus.pb.h"
#include "tern/engine/v1/node.pb.h"
#include "tern/engine/v1/nvmf.pb.h"
#include "tern/engine/v1/pool.pb.h"
#include "tern/engine/v1/replica.pb.h"
#include "tern/engine/v1/snapshot.pb.h"
#include "tern/engine/v1/stats.pb.h"
#include "tern/engine/v1/test.pb.h"

namespace tern::engine::api {

namespace v1 = ::tern::engine::v1;

// --- requests -> domain ---
ShareProtocol to_domain(v1::ShareProtocol p);
Result<CreatePoolArgs> to_domain(const v1::CreatePoolRequest& r);
CreatePoolArgs to_domain(const v1::ImportPoolRequest& r);
Result<ReplicaRef> to_domain(const v1::ReplicaRef& r);
Result<CreateReplicaArgs> to_domain(const v1::CreateReplicaRequest& r);
Result<CreateSnapshotArgs> to_domain(const v1::CreateSnapshotRequest& r);
Result<CreateCloneArgs> to_domain(const v1::CreateCloneRequest& r);
ObjectFilter to_domain(const v1::ListReplicasRequest& r);
// ListSnapshots (kind kSnapshot) and ListClones (kind kClone).
ObjectFilter to_domain(const v1::ListSnapshotsRequest& r, ObjectKind kind);
DelayConfig to_domain(const v1::SetDelayRequest& r);
PatternArgs to_domain(const v1::PatternRequest& r);
std::vector<std::string> to_domain(const google::protobuf::RepeatedPtrField<std::string>& strings);
// Nexuses: the UUIDs are required (kInval naming the field).
Result<Uuid> required_uuid(const char* field, const std::string& s);
Result<CreateNexusArgs> to_domain(const v1::CreateNexusRequest& r);
Result<PublishNexusArgs> to_domain(const v1::PublishNexusRequest& r);
nexus::FaultReason to_domain(v1::ChildReason r);

// --- domain -> replies ---
void to_message(const PoolInfo& p, v1::Pool* out);
void to_message(const ReplicaInfo& r, v1::Replica* out);
void to_message(const DeviceInfo& d, v1::Bdev* out);
void to_message(const DeviceStats& d, v1::IoStats* out);
void to_message(const ReactorLoad& l, v1::ReactorStats* out);
void to_message(const nvmf::SubsystemInfo& s, v1::Subsystem* out);
void to_message(const NodeInfo& n, v1::NodeInfo* out);
void to_message(const PatternCheck& c, v1::VerifyPatternReply* out);
void to_message(const NexusDesc& n, v1::Nexus* out);
nexus::RebuildOptions to_domain(const v1::RebuildSettings& r);
void to_message(const Uuid& nexus, const nexus::RebuildStats& s, v1::Rebuild* out);

}  // namespace tern::engine::api
