// Identifiers tern-csi hands to the CO. A volume's ID is its tern UUID, derived from the CO's name for it
// (CreateVolume's `name`), so a retried or repeated CreateVolume finds the volume the first one made; a
// snapshot's likewise. A node's ID carries what ControllerPublishVolume needs: the node's name (where
// the volume's target may go) and its NVMe host NQN (the only host let in).
#pragma once

#include <optional>
#include <string>

namespace tern::csi {

inline constexpr const char* kDriverName = "io.tern.csi";

std::string volume_uuid_for_name(const std::string& co_name);
std::string snapshot_uuid_for_name(const std::string& co_name);
// True for the canonical UUID form (what every tern volume and snapshot ID is).
bool is_uuid(const std::string& s);

struct NodeId {
  std::string node;  // the Kubernetes node's name (the engine's --node-name on storage nodes)
  std::string host_nqn;
};
// "<node>/<host NQN>"; parse_node_id is nullopt for anything else.
std::string format_node_id(const NodeId& n);
std::optional<NodeId> parse_node_id(const std::string& id);

}  // namespace tern::csi
