#include "csi/ids.h"

#include "common/uuid.h"

namespace tern::csi {

namespace {

// Fixed namespaces: changing them would orphan every volume the CO already knows by name.
const Uuid& volume_ns() {
  static const Uuid u = *Uuid::Parse("6c1f3a52-8d0e-4b7a-9c55-0e7d2b4a9f10");
  return u;
}
const Uuid& snapshot_ns() {
  static const Uuid u = *Uuid::Parse("b2e94d07-3f61-4c8e-a1d3-57c0f8e6a2b4");
  return u;
}

}  // namespace

std::string volume_uuid_for_name(const std::string& co_name) { return Uuid::Derive(volume_ns(), co_name).ToString(); }
std::string snapshot_uuid_for_name(const std::string& co_name) {
  return Uuid::Derive(snapshot_ns(), co_name).ToString();
}
bool is_uuid(const std::string& s) { return Uuid::Parse(s).ok(); }

std::string format_node_id(const NodeId& n) { return n.node + "/" + n.host_nqn; }

std::optional<NodeId> parse_node_id(const std::string& id) {
  size_t slash = id.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 >= id.size()) return std::nullopt;
  NodeId n{id.substr(0, slash), id.substr(slash + 1)};
  if (n.host_nqn.rfind("nqn.", 0) != 0) return std::nullopt;
  return n;
}

}  // namespace tern::csi
