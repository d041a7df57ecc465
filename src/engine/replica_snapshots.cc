#include "engine/replica_snapshots.h"

#include "common/log.h"
#include "nvmf/vendor.h"

namespace tern::engine {

void ReplicaSnapshots::serve(nvmf::Target& target) {
  for (uint8_t opc : {nvmf::vendor::kSnapshot, nvmf::vendor::kDropSnapshot}) {
    target.set_vendor_handler(opc, [this](nvmf::VendorCommand c) { return command(std::move(c)); });
  }
}

void ReplicaSnapshots::stop(nvmf::Target& target) {
  for (uint8_t opc : {nvmf::vendor::kSnapshot, nvmf::vendor::kDropSnapshot}) target.set_vendor_handler(opc, {});
}

Result<ReplicaInfo> ReplicaSnapshots::source_of(const std::string& device) const {
  ObjectFilter f;
  f.uuid = device;
  auto found = pools_.list_objects(f);
  if (found.empty()) return Status::Errorf(Errc::kNotSup, "device '{}' is not a replica of a pool on this node", device);
  if (found[0].kind == ObjectKind::kSnapshot) {
    return Status::Errorf(Errc::kInval, "device '{}' is a snapshot, not a replica or clone", device);
  }
  return found[0];
}

Task<Result<bool>> ReplicaSnapshots::take(std::string device, std::string name, Uuid uuid) {
  TERN_CO_ASSIGN_OR_RETURN(ReplicaInfo src, source_of(device));
  ObjectFilter f;
  f.uuid = uuid.ToString();
  auto before = pools_.list_objects(f);
  const bool existed = !before.empty() && before[0].kind == ObjectKind::kSnapshot && before[0].source == src.uuid &&
                       before[0].name == name;
  CreateSnapshotArgs a;
  a.source.uuid = src.uuid;
  a.name = std::move(name);
  a.uuid = uuid;
  auto made = co_await pools_.create_snapshot(std::move(a));
  if (!made.ok()) co_return made.status();
  co_return existed;
}

Task<Status> ReplicaSnapshots::drop(std::string device, Uuid uuid) {
  TERN_CO_ASSIGN_OR_RETURN(ReplicaInfo src, source_of(device));
  ObjectFilter f;
  f.uuid = uuid.ToString();
  auto found = pools_.list_objects(f);
  if (found.empty()) co_return Status::Ok();  // gone already
  if (found[0].kind != ObjectKind::kSnapshot || found[0].source != src.uuid) {
    co_return Status::Errorf(Errc::kInval, "object {} is not a snapshot of replica {}", uuid.ToString(), src.name);
  }
  ReplicaRef ref;
  ref.uuid = uuid;
  Status st = co_await pools_.destroy_snapshot(ref);
  if (st.code() == Errc::kNoEnt) co_return Status::Ok();
  co_return st;
}

Task<nvmf::AdminResult> ReplicaSnapshots::command(nvmf::VendorCommand cmd) {
  nvmf::AdminResult r;
  auto c = nvmf::vendor::decode_snapshot_command(cmd.data.data(), cmd.data.size());
  if (!c.ok()) {
    TLOG_WARN("engine", "vendor command {:#x} from {}: {}", cmd.sqe.opc, cmd.hostnqn, c.status());
    r.status = nvme::CmdStatus::Generic(nvme::sc::kInvalidField);
    co_return r;
  }
  if (cmd.sqe.opc == nvmf::vendor::kSnapshot) {
    auto took = co_await take(cmd.bdev, c->name, c->uuid);
    if (!took.ok()) {
      TLOG_WARN("engine", "snapshot '{}' of {} for {}: {}", c->name, cmd.bdev, cmd.hostnqn, took.status());
      r.status = nvmf::vendor::status_for(took.code());
      co_return r;
    }
    TLOG_INFO("engine", "snapshot '{}' ({}) of {} for {}{}", c->name, c->uuid.ToString(), cmd.bdev, cmd.hostnqn,
              *took ? " (existed)" : "");
    r.dw0 = *took ? 1 : 0;
    co_return r;
  }
  Status st = co_await drop(cmd.bdev, c->uuid);
  if (!st.ok()) {
    TLOG_WARN("engine", "dropping snapshot {} of {} for {}: {}", c->uuid.ToString(), cmd.bdev, cmd.hostnqn, st);
    r.status = nvmf::vendor::status_for(st.code());
  }
  co_return r;
}

}  // namespace tern::engine
