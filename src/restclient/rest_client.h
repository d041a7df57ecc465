// How ternctl and tern-csi talk to the core agent: HTTP/1.1 + JSON against its REST API
// (docs/api/rest-v1.openapi.json), blocking (a command line waits anyway), one connection per request.
//
// Several agents may be given (--agent a,b or TERN_AGENT): a request goes to the first that answers; a
// standby's 503 ("agent X is a standby; Y leads") moves on to the next, so any agent's address will do.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "common/result.h"
#include "store/http_parser.h"

namespace tern::rest {

struct RestReply {
  int status = 0;
  nlohmann::json body;  // null when there is none
};

// `agents`: "http://host:port", "https://host:port" or "host:port", each. HTTPS checks the agent's
// certificate against `ca_file` (empty: the system's CAs) and the name or address it is reached by.
// The reply (whatever its status), or an error when no agent could be reached (naming each and why).
Result<RestReply> rest_call(const std::vector<std::string>& agents, const std::string& method, const std::string& path,
                            const nlohmann::json* body, double timeout_s, const std::string& ca_file = "");

class Connection;

// A whole HTTP reply read from `conn` (its body decoded when chunked), for clients that send their own
// request on a Connection (connection.h).
struct HttpReply {
  int status = 0;
  std::vector<store::HttpHeader> headers;
  std::string body;
};
Result<HttpReply> read_reply(Connection& conn, bool head_request = false, uint64_t max_body_bytes = 64ull << 20);

// A problem document's detail (or the status line when it has none).
std::string problem_detail(const RestReply& r);

}  // namespace tern::rest
