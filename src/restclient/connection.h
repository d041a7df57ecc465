// Connection: one blocking TCP connection, plain or TLS, for the control plane's HTTP clients (the agent's
// REST API in rest_client.h, the Kubernetes API in src/kube).
//
//   auto u = Url::Parse("https://10.96.0.1:443", "443");
//   auto c = Connection::Open(*u, "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt", 3, 30);
//   (*c)->send_all(request);  ... (*c)->recv(buf, sizeof buf) ...
//
// TLS: 1.2 or later; the peer's certificate is checked against `ca_file` (empty: the system's CAs) and
// the name or address it was reached by (SNI is sent for names). Connecting gets `connect_timeout_s`; each
// send and receive then gets `io_timeout_s`. Errors are values: kTimedOut, kConnRefused (and the other
// errno codes), kAccess for an untrusted certificate, kProto for a failed handshake.
//
// Threads: none of its own; a Connection is used by one thread at a time and blocks it.
#pragma once

#include <openssl/types.h>

#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"

namespace tern::rest {

struct Url {
  std::string host;  // a name or an address (IPv6 without brackets)
  std::string port;
  bool tls = false;
  // "http://host:port", "https://host:port", "host:port", "host" (`default_port`); a path after the
  // authority is ignored; "[v6]:port" for IPv6.
  static Result<Url> Parse(std::string text, std::string_view default_port);
  // The Host header's value: "host:port", "[v6]:port".
  std::string authority() const;
};

class Connection {
 public:
  static Result<std::unique_ptr<Connection>> Open(const Url& url, const std::string& ca_file, double connect_timeout_s,
                                                  double io_timeout_s);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  Status send_all(std::string_view data);
  // Some bytes (at most n), 0 when the peer closed the connection, kTimedOut after io_timeout_s without any.
  Result<size_t> recv(char* buf, size_t n);
  // Waits up to `wait_ms` for something to read (bytes TLS holds already count); true when recv() will not
  // block (it may then report the close).
  bool wait_readable(int wait_ms);

 private:
  Connection() = default;
  int fd_ = -1;
  double io_timeout_s_ = 0;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
};

}  // namespace tern::rest
