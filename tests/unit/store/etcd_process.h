// EtcdCluster: real etcd processes (Debian's etcd-server, /usr/bin/etcd) for the store's tests.
//
//   auto c = EtcdCluster::Start(1);            // or 3 for a cluster; nullptr (and a failure) when it cannot
//   opts.endpoints = c->endpoints();
//   c->pause(0); ... c->resume(0);             // SIGSTOP / SIGCONT
//   c->stop(0); c->restart(0);                 // SIGTERM (SIGKILL after 5 s), then again on the same data
//
// Each member gets free loopback ports (client and peer) and a data directory under a temporary
// directory that is removed at the end. Every process started is stopped by the destructor (resumed
// first if paused, SIGTERM, SIGKILL after a bounded wait), and dies with the test process too
// (PR_SET_PDEATHSIG), so a crashed test leaves nothing behind. Every wait is bounded and polls its
// condition (waitpid, the /health endpoint); none sleeps blindly.
//
// Threads: the test's main thread (the one that started the cluster: the death signal follows it).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tern::test {

class EtcdCluster {
 public:
  static constexpr const char* kBinary = "/usr/bin/etcd";

  // Starts `members` members and waits (up to 20 s) until every one answers /health. On failure returns
  // null with `error` saying why (and what etcd logged).
  static std::unique_ptr<EtcdCluster> Start(unsigned members, std::string* error);
  ~EtcdCluster();
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  unsigned size() const { return unsigned(members_.size()); }
  std::string endpoint(unsigned i) const;  // "127.0.0.1:<client port>"
  std::vector<std::string> endpoints() const;
  uint16_t client_port(unsigned i) const { return members_[i].client_port; }

  // SIGTERM, then SIGKILL if it has not exited within `grace_ms`; waits for the exit.
  void stop(unsigned i, int grace_ms = 5000);
  // SIGKILL; waits for the exit.
  void kill(unsigned i);
  void pause(unsigned i);   // SIGSTOP; returns once every thread of it is stopped
  void resume(unsigned i);  // SIGCONT
  // Starts a stopped member again on its ports and data; true once it answers /health (within 20 s).
  bool restart(unsigned i, std::string* error = nullptr);
  bool running(unsigned i) const { return members_[i].pid > 0; }
  // True once member `i` reports healthy (it has a leader and serves reads), polling up to `timeout_ms`.
  bool wait_healthy(unsigned i, int timeout_ms);
  // The end of the member's log, for failure messages.
  std::string log_tail(unsigned i, size_t bytes = 2000) const;

 private:
  struct Member {
    std::string name;
    uint16_t client_port = 0;
    uint16_t peer_port = 0;
    std::string data_dir;
    std::string log_path;
    pid_t pid = -1;
    bool paused = false;
  };
  EtcdCluster() = default;
  bool spawn(unsigned i, std::string* error);
  bool exited(unsigned i, int timeout_ms);

  std::string root_;
  std::string token_;
  std::string initial_cluster_;
  std::vector<Member> members_;
};

}  // namespace tern::test
