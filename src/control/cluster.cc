#include "control/cluster.h"

#include "nexus/record.h"

namespace tern::control {

Task<Result<Cluster::Current>> Cluster::current_replicas(std::string uuid) {
  Current out;
  auto rec = co_await specs.read(specs.keys().record(uuid));
  if (!rec.ok()) {
    if (rec.code() == Errc::kNoEnt) co_return out;
    co_return rec.status();
  }
  auto parsed = nexus::NexusRecord::FromJson(*rec);
  if (!parsed.ok()) co_return Status::Errorf(Errc::kCorruption, "volume {}: its nexus record: {}", uuid, parsed.status().message());
  out.recorded = true;
  for (const auto& ch : parsed->children) {
    if (ch.healthy) out.healthy.insert(ch.uuid.ToString());
  }
  co_return out;
}

}  // namespace tern::control
