#include "nexus/record.h"

#include <nlohmann/json.hpp>

namespace tern::nexus {

using json = nlohmann::json;

std::string NexusRecord::ToJson() const {
  json j;
  j["clean_shutdown"] = clean_shutdown;
  j["generation"] = generation;
  if (writer) j["writer"] = writer;
  j["children"] = json::array();
  for (const Child& c : children) {
    json e = {{"uuid", c.uuid.ToString()}, {"healthy", c.healthy}};
    if (c.rebuild_token) e["rebuild_token"] = c.rebuild_token;
    j["children"].push_back(std::move(e));
  }
  return j.dump();
}

Result<NexusRecord> NexusRecord::FromJson(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Status(Errc::kInval, "nexus record: not a JSON object");
  NexusRecord r;
  auto cs = j.find("clean_shutdown");
  if (cs == j.end() || !cs->is_boolean()) return Status(Errc::kInval, "nexus record: 'clean_shutdown' (a boolean) is missing");
  r.clean_shutdown = cs->get<bool>();
  if (auto g = j.find("generation"); g != j.end()) {
    if (!g->is_number_unsigned()) return Status(Errc::kInval, "nexus record: 'generation' is not a non-negative integer");
    r.generation = g->get<uint64_t>();
  }
  if (auto w = j.find("writer"); w != j.end()) {
    if (!w->is_number_unsigned()) return Status(Errc::kInval, "nexus record: 'writer' is not a non-negative integer");
    r.writer = w->get<uint64_t>();
  }
  auto ch = j.find("children");
  if (ch == j.end() || !ch->is_array()) return Status(Errc::kInval, "nexus record: 'children' (an array) is missing");
  for (size_t i = 0; i < ch->size(); ++i) {
    const json& c = (*ch)[i];
    if (!c.is_object()) return Status::Errorf(Errc::kInval, "nexus record: children[{}] is not an object", i);
    auto u = c.find("uuid");
    auto h = c.find("healthy");
    if (u == c.end() || !u->is_string()) return Status::Errorf(Errc::kInval, "nexus record: children[{}].uuid is missing", i);
    if (h == c.end() || !h->is_boolean()) {
      return Status::Errorf(Errc::kInval, "nexus record: children[{}].healthy is missing", i);
    }
    auto uuid = Uuid::Parse(u->get<std::string>());
    if (!uuid.ok()) return Status::Errorf(Errc::kInval, "nexus record: children[{}].uuid: {}", i, uuid.status().message());
    uint64_t token = 0;
    if (auto t = c.find("rebuild_token"); t != c.end()) {
      if (!t->is_number_unsigned()) {
        return Status::Errorf(Errc::kInval, "nexus record: children[{}].rebuild_token is not a non-negative integer", i);
      }
      token = t->get<uint64_t>();
    }
    r.children.push_back({*uuid, h->get<bool>(), token});
  }
  return r;
}

}  // namespace tern::nexus
