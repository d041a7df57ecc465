// KubeClient: the Kubernetes API as the agent needs it — JSON requests with the pod's service-account token
// over HTTPS, and watches (one JSON event per line of a long response).
//
//   auto cfg = KubeConfig::InCluster();          // KUBERNETES_SERVICE_HOST/PORT + the mounted token and CA
//   KubeClient k(*cfg);
//   auto r = k.call("GET", "/apis/tern.io/v1alpha1/namespaces/tern/diskpools");
//   k.watch(path + "?watch=1&resourceVersion=" + rv, [](std::string_view line) { ...; return true; }, stop);
//
// The token file is read again for every request: the kubelet rotates projected tokens (hourly) in place.
// Each request has its own connection (Connection: close): the agent asks a few times a minute.
//
// Threads: none of its own; calls block their caller (the DiskPool operator's thread). A KubeClient may be
// used by one thread at a time.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"
#include "restclient/connection.h"

namespace tern::kube {

inline constexpr const char* kServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

struct KubeConfig {
  std::string api;         // "https://host:port"
  std::string token_file;  // bearer token ("": none)
  std::string ca_file;     // the API server's CA ("": the system's)
  std::string ns;          // the namespace to watch
  double timeout_s = 10;   // each request (a watch: its connection and each read)
  std::string user_agent = "tern-agent";

  // In a pod: the API server from KUBERNETES_SERVICE_HOST and _PORT, the token, CA and namespace from the
  // service account's mount (`sa_dir`). Fields already set are kept (flags win). kInval naming what is
  // missing (not in a pod, or automountServiceAccountToken off).
  Status complete_in_cluster(const std::string& sa_dir = kServiceAccountDir);
};

struct KubeReply {
  int status = 0;
  nlohmann::json body;  // null when empty or not JSON
  // The reply's message for a log line: a Status object's "message", or the HTTP status.
  std::string message() const;
};

class KubeClient {
 public:
  explicit KubeClient(KubeConfig cfg) : cfg_(std::move(cfg)) {}

  const KubeConfig& config() const { return cfg_; }

  // A request with an optional JSON body (`content_type`: application/json, or
  // application/merge-patch+json for PATCH). The reply whatever its status; an error when there is none.
  Result<KubeReply> call(const std::string& method, const std::string& path, const nlohmann::json* body = nullptr,
                         const std::string& content_type = "application/json");

  // GETs `path` (a watch) and hands each line of the body to `on_line` until the server ends the response
  // (Ok), `on_line` returns false (Ok), `stop` becomes true (kCanceled: noticed within half a second, or
  // within the read timeout when a TLS record is half received), nothing arrives for `max_quiet_s`
  // (kTimedOut: give the watch's timeoutSeconds and some), or something fails. A reply other than 200 is
  // kProto with its status and message.
  Status watch(const std::string& path, const std::function<bool(std::string_view)>& on_line,
               const std::atomic<bool>& stop, double max_quiet_s);

 private:
  // Connects and sends the request (the token read now); the connection, for its reply.
  Result<std::unique_ptr<rest::Connection>> send(const std::string& method, const std::string& path,
                                                 const std::string& content_type, const std::string& payload) const;

  KubeConfig cfg_;
};

}  // namespace tern::kube
