#include "kube/kube_client.h"

#include <fmt/format.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "kube/diskpool.h"
#include "restclient/connection.h"
#include "restclient/rest_client.h"
#include "store/http_parser.h"

namespace tern::kube {

namespace {

Result<std::string> read_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) return Status::Errorf(Errc::kNoEnt, "cannot read {}", path);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

bool exists(const std::string& path) { return std::ifstream(path).good(); }

}  // namespace

Status KubeConfig::complete_in_cluster(const std::string& sa_dir) {
  if (api.empty()) {
    const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
    const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
    if (!host || !*host || !port || !*port) {
      return Status(Errc::kInval, "the Kubernetes API: KUBERNETES_SERVICE_HOST and _PORT are not set (not in a pod?); "
                                  "give --kube-api");
    }
    std::string h = host;
    api = fmt::format("https://{}:{}", h.find(':') != std::string::npos ? "[" + h + "]" : h, port);
  }
  if (token_file.empty() && exists(sa_dir + "/token")) token_file = sa_dir + "/token";
  if (ca_file.empty() && exists(sa_dir + "/ca.crt")) ca_file = sa_dir + "/ca.crt";
  if (ns.empty()) {
    auto n = read_file(sa_dir + "/namespace");
    if (!n.ok() || n->empty()) {
      return Status::Errorf(Errc::kInval, "the namespace: {}/namespace is not mounted; give --kube-namespace", sa_dir);
    }
    ns = *n;
  }
  return Status::Ok();
}

std::string KubeReply::message() const {
  if (body.is_object() && body.contains("message") && body["message"].is_string()) {
    return fmt::format("HTTP {}: {}", status, body["message"].get<std::string>());
  }
  return fmt::format("HTTP {}", status);
}

Result<std::unique_ptr<rest::Connection>> KubeClient::send(const std::string& method, const std::string& path,
                                                            const std::string& content_type,
                                                            const std::string& payload) const {
  std::string token;
  if (!cfg_.token_file.empty()) {
    auto t = read_file(cfg_.token_file);
    if (!t.ok()) return Status::Errorf(Errc::kAccess, "the service-account token: {}", t.status().message());
    token = *t;
  }
  auto url = rest::Url::Parse(cfg_.api, "443");
  if (!url.ok()) return url.status();
  std::string req = fmt::format("{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n"
                                "User-Agent: {}\r\n",
                                method, path, url->authority(), cfg_.user_agent);
  if (!token.empty()) req += fmt::format("Authorization: Bearer {}\r\n", token);
  if (!payload.empty()) req += fmt::format("Content-Type: {}\r\nContent-Length: {}\r\n", content_type, payload.size());
  req += "\r\n" + payload;
  auto conn = rest::Connection::Open(*url, cfg_.ca_file, 5, cfg_.timeout_s);
  if (!conn.ok()) return conn.status();
  if (Status s = (*conn)->send_all(req); !s.ok()) return s;
  return conn;
}

Result<KubeReply> KubeClient::call(const std::string& method, const std::string& path, const nlohmann::json* body,
                                   const std::string& content_type) {
  // Text from elsewhere (a disk path, an engine's message) may not be valid UTF-8: replaced, not thrown.
  std::string payload = body ? body->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) : std::string();
  auto conn = send(method, path, content_type, payload);
  if (!conn.ok()) return conn.status();
  auto r = rest::read_reply(**conn, method == "HEAD");
  if (!r.ok()) return r.status();
  KubeReply out;
  out.status = r->status;
  if (!r->body.empty()) {
    out.body = nlohmann::json::parse(r->body, nullptr, false);
    if (out.body.is_discarded()) out.body = nullptr;
  }
  return out;
}

Status KubeClient::watch(const std::string& path, const std::function<bool(std::string_view)>& on_line,
                         const std::atomic<bool>& stop, double max_quiet_s) {
  auto conn = send("GET", path, "", "");
  if (!conn.ok()) return conn.status();
  store::HttpParserLimits limits;
  limits.max_body_bytes = 0;  // a stream
  store::HttpResponseParser p(limits);
  p.reset();
  LineSplitter lines;
  std::vector<std::string> got;
  std::string error_body;  // a reply other than 200: its body, for the message
  char buf[16384];
  // Silence longer than this ends the watch (the server ends it at its timeoutSeconds).
  const int max_quiet_ms = int(max_quiet_s * 1000);
  int quiet_ms = 0;
  while (true) {
    if (stop.load()) return Status(Errc::kCanceled, "stopping");
    if (!(*conn)->wait_readable(500)) {
      quiet_ms += 500;
      if (quiet_ms > max_quiet_ms) return Status::Errorf(Errc::kTimedOut, "the watch was silent for {} s", quiet_ms / 1000);
      continue;
    }
    quiet_ms = 0;
    auto n = (*conn)->recv(buf, sizeof(buf));
    if (!n.ok()) return n.status();
    std::string_view in(buf, *n);
    if (*n == 0) {
      auto st = p.finish();
      if (st.event == store::HttpResponseParser::Event::kError) {
        return Status::Errorf(Errc::kProto, "malformed HTTP reply: {}", p.error());
      }
    }
    while (*n != 0) {
      auto st = p.next(in);
      in.remove_prefix(st.consumed);
      if (st.event == store::HttpResponseParser::Event::kError) {
        return Status::Errorf(Errc::kProto, "malformed HTTP reply: {}", p.error());
      }
      if (st.event == store::HttpResponseParser::Event::kBody) {
        if (p.head().status != 200) {
          if (error_body.size() < 4096) error_body.append(st.data.substr(0, 4096 - error_body.size()));
          continue;
        }
        got.clear();
        if (Status s = lines.feed(st.data, got); !s.ok()) return s;
        for (const std::string& l : got) {
          if (!on_line(l)) return Status::Ok();
        }
      }
      if (st.event == store::HttpResponseParser::Event::kComplete ||
          st.event == store::HttpResponseParser::Event::kNeedMore) {
        break;
      }
    }
    if (p.complete() || *n == 0) {
      if (p.head_done() && p.head().status != 200) {
        KubeReply r{p.head().status, nlohmann::json::parse(error_body, nullptr, false)};
        if (r.body.is_discarded()) r.body = nullptr;
        return Status::Errorf(Errc::kProto, "watch: {}", r.message());
      }
      return Status::Ok();
    }
  }
}

}  // namespace tern::kube
