#include "engine/share_props.h"

#include "common/log.h"

namespace tern::engine {

namespace {

std::vector<std::string> split_hosts(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < s.size()) {
    size_t end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// A value we do not know is kept as kNone: sharing it again then fails with a message naming it.
ShareProtocol protocol_from(const std::string& s) {
  if (s == "nvmf") return ShareProtocol::kNvmf;
  if (s == "nbd") return ShareProtocol::kNbd;
  return ShareProtocol::kNone;
}

}  // namespace

std::optional<RecordedShare> recorded_share(const pool::ReplicaMeta& m) {
  auto it = m.props.find(kPropShare);
  if (it == m.props.end()) return std::nullopt;
  RecordedShare r;
  r.protocol = protocol_from(it->second);
  r.protocol_text = it->second;
  if (auto hit = m.props.find(kPropHosts); hit != m.props.end()) r.hosts = split_hosts(hit->second);
  return r;
}

std::string join_hosts(const std::vector<std::string>& hosts) { return fmt::format("{}", fmt::join(hosts, ",")); }

}  // namespace tern::engine
