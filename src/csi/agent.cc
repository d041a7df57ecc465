#include "csi/agent.h"

#include <fmt/format.h>

namespace tern::csi {

grpc::Status Agent::call(const std::string& method, const std::string& path, const nlohmann::json* body,
                         rest::RestReply* reply) const {
  auto r = rest::rest_call(o_.urls, method, path, body, o_.timeout_s, o_.ca_file);
  if (!r.ok()) return grpc::Status(grpc::StatusCode::UNAVAILABLE, std::string(r.status().message()));
  *reply = std::move(*r);
  return grpc::Status::OK;
}

grpc::Status Agent::expect(const std::string& method, const std::string& path, const nlohmann::json* body,
                           std::initializer_list<int> ok, rest::RestReply* reply, const std::string& what) const {
  grpc::Status s = call(method, path, body, reply);
  if (!s.ok()) return grpc::Status(s.error_code(), fmt::format("{}: {}", what, s.error_message()));
  for (int code : ok) {
    if (reply->status == code) return grpc::Status::OK;
  }
  return status_for(*reply, what);
}

grpc::Status Agent::status_for(const rest::RestReply& r, const std::string& what) {
  std::string code = r.body.is_object() && r.body.contains("code") && r.body["code"].is_string()
                         ? r.body["code"].get<std::string>()
                         : "";
  std::string msg = fmt::format("{}: {}", what, rest::problem_detail(r));
  switch (r.status) {
    case 400: return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, msg);
    case 404: return grpc::Status(grpc::StatusCode::NOT_FOUND, msg);
    case 409:
      if (code == "EEXIST") return grpc::Status(grpc::StatusCode::ALREADY_EXISTS, msg);
      return grpc::Status(grpc::StatusCode::ABORTED, msg);
    case 503: return grpc::Status(grpc::StatusCode::UNAVAILABLE, msg);
    case 507: return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, msg);
    default: return grpc::Status(grpc::StatusCode::INTERNAL, msg);
  }
}

}  // namespace tern::csi
