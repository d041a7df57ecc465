// How a pool object's share is recorded in the object's properties (record 8 of the pool format), so
// that the share comes back wherever the pool is imported: after a restart, or on another node.
//
//   share.protocol = nvmf | nbd        share.hosts = host NQNs, comma separated ("" or absent: any)
//
// Plain functions on values; used by PoolManager on reactor 0.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "engine/shares.h"
#include "engine/types.h"
#include "pool/state.h"

namespace tern::engine {

inline constexpr const char* kPropShare = "share.protocol";
inline constexpr const char* kPropHosts = "share.hosts";

struct RecordedShare {
  ShareProtocol protocol = ShareProtocol::kNone;
  std::string protocol_text;  // as stored (named in warnings when it cannot be shared again)
  std::vector<std::string> hosts;
};

// The share recorded for `m`, if any.
std::optional<RecordedShare> recorded_share(const pool::ReplicaMeta& m);
// The stored form of an allowed-hosts list (also how lists are shown in messages).
std::string join_hosts(const std::vector<std::string>& hosts);

}  // namespace tern::engine
