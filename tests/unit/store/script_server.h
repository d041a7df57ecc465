// ScriptServer: a loopback HTTP server for the HTTP client's tests, on plain blocking sockets in threads
// of its own (not a reactor: it plays the other side). Each request read from a connection goes to a
// handler, which says what to send back — as raw bytes, in pieces with pauses, then close or keep the
// connection, or send nothing at all.
//
// Bounded everywhere: reads poll with short timeouts and give up when the server stops; the destructor
// stops the threads and joins them.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tern::test {

class ScriptServer {
 public:
  struct Reply {
    std::vector<std::string> pieces;  // sent one after the other
    int pause_ms = 0;                 // between pieces
    bool close_after = false;         // close the connection once sent
    bool silent = false;              // send nothing; keep the connection until the client closes it
    std::function<void(size_t)> before_piece;  // called before piece i is sent (to wait for the client)
  };
  using Handler = std::function<Reply(const std::string& request, unsigned conn_index)>;

  explicit ScriptServer(Handler h) : handler_(std::move(h)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(listen_fd_, 16) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      std::abort();
    }
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }

  ~ScriptServer() {
    stop_ = true;
    acceptor_.join();
    for (auto& t : workers_) t.join();
    ::close(listen_fd_);
  }

  uint16_t port() const { return port_; }
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(port_); }
  unsigned accepted() const { return accepted_.load(); }
  unsigned requests() const { return requests_.load(); }
  // Connections the client closed (end of stream seen), for "the connection was closed" checks.
  unsigned client_closes() const { return client_closes_.load(); }
  std::vector<std::string> request_log() {
    std::lock_guard<std::mutex> g(mu_);
    return log_;
  }

  // A complete response with a Content-Length body.
  static std::string ok(const std::string& body, const std::string& extra_headers = "") {
    return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra_headers +
           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  }

 private:
  void accept_loop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) != 1) continue;
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      unsigned index = accepted_++;
      workers_.emplace_back([this, fd, index] { serve(fd, index); });
    }
  }

  // Reads one request (head, then Content-Length bytes of body); false when the client closed or the
  // server stops.
  bool read_request(int fd, std::string& buf, std::string& req) {
    while (true) {
      size_t end = buf.find("\r\n\r\n");
      if (end != std::string::npos) {
        size_t body = 0;
        size_t cl = buf.find("Content-Length: ");
        if (cl != std::string::npos && cl < end) body = std::strtoul(buf.c_str() + cl + 16, nullptr, 10);
        if (buf.size() >= end + 4 + body) {
          req = buf.substr(0, end + 4 + body);
          buf.erase(0, end + 4 + body);
          return true;
        }
      }
      if (!wait_readable(fd)) return false;
      char tmp[4096];
      ssize_t n = ::recv(fd, tmp, sizeof(tmp), 0);
      if (n <= 0) {
        client_closes_++;
        return false;
      }
      buf.append(tmp, size_t(n));
    }
  }

  bool wait_readable(int fd) {
    while (!stop_) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 20) == 1) return true;
    }
    return false;
  }

  void serve(int fd, unsigned index) {
    std::string buf, req;
    while (read_request(fd, buf, req)) {
      requests_++;
      {
        std::lock_guard<std::mutex> g(mu_);
        log_.push_back(req);
      }
      Reply r = handler_(req, index);
      if (r.silent) {
        // Wait for the client to give up and close.
        char tmp[256];
        while (wait_readable(fd)) {
          if (::recv(fd, tmp, sizeof(tmp), 0) <= 0) {
            client_closes_++;
            break;
          }
        }
        break;
      }
      bool failed = false;
      for (size_t i = 0; i < r.pieces.size() && !failed; ++i) {
        if (i > 0 && r.pause_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(r.pause_ms));
        if (r.before_piece) r.before_piece(i);
        failed = ::send(fd, r.pieces[i].data(), r.pieces[i].size(), MSG_NOSIGNAL) != ssize_t(r.pieces[i].size());
      }
      if (failed || r.close_after) break;
    }
    ::close(fd);
  }

  Handler handler_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<unsigned> accepted_{0};
  std::atomic<unsigned> requests_{0};
  std::atomic<unsigned> client_closes_{0};
  std::thread acceptor_;
  std::vector<std::thread> workers_;  // only the acceptor adds; joined after it
  std::mutex mu_;
  std::vector<std::string> log_;
};

// Waits (bounded, in real time) until `pred` holds.
template <typename P>
bool eventually(P pred, int timeout_ms = 10000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return pred();
}

}  // namespace tern::test
