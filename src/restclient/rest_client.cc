#include "restclient/rest_client.h"

#include <map>
#include <mutex>
#include <optional>

#include "common/log.h"
#include "restclient/connection.h"
#include "store/http_parser.h"

namespace tern::rest {

namespace {

constexpr double kConnectTimeoutS = 3;

// One request on a fresh connection; the whole reply read (Connection: close).
Result<RestReply> one(const Url& url, const std::string& method, const std::string& path, const std::string& body,
                      double timeout_s, const std::string& ca_file) {
  auto conn = Connection::Open(url, ca_file, kConnectTimeoutS, timeout_s);
  if (!conn.ok()) {
    if (conn.code() == Errc::kAccess) {
      return Status::Errorf(Errc::kAccess, "{} (give its CA with --agent-ca)", conn.status().message());
    }
    return conn.status();
  }
  std::string req = fmt::format("{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n", method,
                                path, url.authority());
  if (!body.empty()) req += fmt::format("Content-Type: application/json\r\nContent-Length: {}\r\n", body.size());
  req += "\r\n" + body;
  if (Status s = (*conn)->send_all(req); !s.ok()) return s;
  auto reply = read_reply(**conn, method == "HEAD");
  if (!reply.ok()) return reply.status();
  RestReply r;
  r.status = reply->status;
  if (!reply->body.empty()) {
    r.body = nlohmann::json::parse(reply->body, nullptr, false);
    if (r.body.is_discarded()) r.body = reply->body;
  }
  return r;
}

}  // namespace

Result<RestReply> rest_call(const std::vector<std::string>& agents, const std::string& method, const std::string& path,
                            const nlohmann::json* body, double timeout_s, const std::string& ca_file) {
  std::string payload = body ? body->dump() : std::string();
  std::string why;
  std::optional<RestReply> standby;
  // The agent that answered last (the leader, most likely) is asked first.
  static std::mutex mu;
  static std::map<std::vector<std::string>, size_t> last_good;
  size_t first = 0;
  {
    std::lock_guard l(mu);
    auto it = last_good.find(agents);
    if (it != last_good.end() && it->second < agents.size()) first = it->second;
  }
  for (size_t k = 0; k < agents.size(); k++) {
    const size_t i = (first + k) % agents.size();
    const std::string& a = agents[i];
    auto url = Url::Parse(a, "8081");
    if (!url.ok()) return url.status();
    auto r = one(*url, method, path, payload, timeout_s, ca_file);
    if (!r.ok()) {
      why += fmt::format("{}{}: {}", why.empty() ? "" : "; ", a, r.status().message());
      continue;
    }
    if (r->status == 503 && agents.size() > 1) {
      standby = *r;
      continue;
    }
    std::lock_guard l(mu);
    last_good[agents] = i;
    return r;
  }
  if (standby) return *standby;
  return Status::Errorf(Errc::kConnRefused, "cannot reach the agent ({}); is tern-agent running?", why);
}

Result<HttpReply> read_reply(Connection& conn, bool head_request, uint64_t max_body_bytes) {
  store::HttpParserLimits limits;
  limits.max_body_bytes = max_body_bytes;
  store::HttpResponseParser p(limits);
  p.reset(head_request);
  HttpReply out;
  char buf[16384];
  while (true) {
    auto n = conn.recv(buf, sizeof(buf));
    if (!n.ok()) return n.status();
    std::string_view in(buf, *n);
    store::HttpResponseParser::Step st;
    if (*n == 0) {
      st = p.finish();
      if (st.event == store::HttpResponseParser::Event::kError) {
        return Status::Errorf(Errc::kProto, "malformed HTTP reply: {}", p.error());
      }
      if (st.event != store::HttpResponseParser::Event::kComplete) return Status(Errc::kProto, "the reply ended early");
    }
    // Until the parser needs more: a body's end is an event of its own, even with nothing left to give.
    while (*n != 0) {
      st = p.next(in);
      in.remove_prefix(st.consumed);
      if (st.event == store::HttpResponseParser::Event::kError) {
        return Status::Errorf(Errc::kProto, "malformed HTTP reply: {}", p.error());
      }
      if (st.event == store::HttpResponseParser::Event::kBody) out.body.append(st.data);
      if (st.event == store::HttpResponseParser::Event::kComplete ||
          st.event == store::HttpResponseParser::Event::kNeedMore) {
        break;
      }
    }
    if (p.complete()) {
      out.status = p.head().status;
      out.headers = p.head().headers;
      return out;
    }
  }
}

std::string problem_detail(const RestReply& r) {
  if (r.body.is_object() && r.body.contains("detail") && r.body["detail"].is_string()) return r.body["detail"];
  return fmt::format("HTTP {}", r.status);
}

}  // namespace tern::rest
