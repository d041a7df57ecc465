#include "etcd_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace tern::test {
namespace {

using Clock = std::chrono::steady_clock;

// Ports the kernel hands out for binding to port 0, held open together so they are distinct, then
// released for etcd. Another process could take one in between; Start retries with new ports then.
std::vector<uint16_t> free_ports(unsigned n) {
  std::vector<int> fds;
  std::vector<uint16_t> ports;
  for (unsigned i = 0; i < n; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof(a);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      if (fd >= 0) ::close(fd);
      break;
    }
    fds.push_back(fd);
    ports.push_back(ntohs(a.sin_port));
  }
  for (int fd : fds) ::close(fd);
  return ports;
}

// GET /health on 127.0.0.1:port with a bounded wait: true when etcd says {"health":"true"}.
bool healthy(uint16_t port, int timeout_ms) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  auto left = [&] {
    return int(std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count()));
  };
  bool ok = false;
  do {
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 && errno != EINPROGRESS) break;
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, left()) != 1) break;
    int err = 0;
    socklen_t len = sizeof(err);
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) break;
    std::string req = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != ssize_t(req.size())) break;
    std::string resp;
    char buf[4096];
    while (left() > 0) {
      pollfd q{fd, POLLIN, 0};
      if (::poll(&q, 1, left()) != 1) break;
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      resp.append(buf, size_t(n));
      if (resp.find("\"health\":\"true\"") != std::string::npos) {
        ok = true;
        break;
      }
    }
  } while (false);
  ::close(fd);
  return ok;
}

}  // namespace

std::unique_ptr<EtcdCluster> EtcdCluster::Start(unsigned members, std::string* error) {
  if (::access(kBinary, X_OK) != 0) {
    *error = std::string(kBinary) + " is not installed (scripts/install-deps.sh installs Debian's etcd-server)";
    return nullptr;
  }
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::unique_ptr<EtcdCluster> c(new EtcdCluster());
    std::string tmpl = (std::filesystem::temp_directory_path() / "tern-etcd-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) {
      *error = std::string("mkdtemp: ") + std::strerror(errno);
      return nullptr;
    }
    c->root_ = tmpl;
    c->token_ = "tern-test-" + std::filesystem::path(tmpl).filename().string();
    std::vector<uint16_t> ports = free_ports(members * 2);
    if (ports.size() != members * 2) {
      *error = "cannot find free ports";
      return nullptr;
    }
    for (unsigned i = 0; i < members; ++i) {
      Member m;
      m.name = "m" + std::to_string(i);
      m.client_port = ports[2 * i];
      m.peer_port = ports[2 * i + 1];
      m.data_dir = c->root_ + "/" + m.name + ".etcd";
      m.log_path = c->root_ + "/" + m.name + ".log";
      c->initial_cluster_ += (i ? "," : "") + m.name + "=http://127.0.0.1:" + std::to_string(m.peer_port);
      c->members_.push_back(std::move(m));
    }
    bool started = true;
    for (unsigned i = 0; i < members && started; ++i) started = c->spawn(i, error);
    if (!started) return nullptr;
    // All members must be up before any can elect a leader, so health is checked after all started.
    bool all = true;
    for (unsigned i = 0; i < members && all; ++i) {
      all = c->wait_healthy(i, 20000);
      if (!all) {
        *error = "etcd member " + c->members_[i].name + " did not become healthy:\n" + c->log_tail(i);
      }
    }
    if (all) return c;
    // A port taken by someone else between free_ports and etcd's bind: try again with new ones.
    bool port_clash = false;
    for (unsigned i = 0; i < members; ++i)
      if (c->log_tail(i, 100000).find("address already in use") != std::string::npos) port_clash = true;
    if (!port_clash) return nullptr;
  }
  return nullptr;
}

EtcdCluster::~EtcdCluster() {
  for (unsigned i = 0; i < members_.size(); ++i) stop(i, 3000);
  std::error_code ec;
  if (!root_.empty()) std::filesystem::remove_all(root_, ec);
}

std::string EtcdCluster::endpoint(unsigned i) const { return "127.0.0.1:" + std::to_string(members_[i].client_port); }

std::vector<std::string> EtcdCluster::endpoints() const {
  std::vector<std::string> out;
  for (unsigned i = 0; i < members_.size(); ++i) out.push_back(endpoint(i));
  return out;
}

bool EtcdCluster::spawn(unsigned i, std::string* error) {
  Member& m = members_[i];
  std::string client = "http://127.0.0.1:" + std::to_string(m.client_port);
  std::string peer = "http://127.0.0.1:" + std::to_string(m.peer_port);
  // Short heartbeats and elections: a cluster elects its leader fast, and the smallest lease TTL etcd
  // grants (1.5 election timeouts, rounded up to whole seconds) is 1 s instead of 2.
  std::vector<std::string> args = {kBinary,
                                    "--name", m.name,
                                    "--data-dir", m.data_dir,
                                    "--listen-client-urls", client,
                                    "--advertise-client-urls", client,
                                    "--listen-peer-urls", peer,
                                    "--initial-advertise-peer-urls", peer,
                                    "--initial-cluster", initial_cluster_,
                                    "--initial-cluster-state", "new",
                                    "--initial-cluster-token", token_,
                                    "--heartbeat-interval", "50",
                                    "--election-timeout", "500",
                                    "--logger", "zap",
                                    "--log-level", "warn"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int log = ::open(m.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) {
    *error = "cannot create " + m.log_path + ": " + std::strerror(errno);
    return false;
  }
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log);
    *error = std::string("fork: ") + std::strerror(errno);
    return false;
  }
  if (pid == 0) {
    // Only async-signal-safe calls until exec: the test process has threads.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the test died before the line above took effect
    ::dup2(log, 1);
    ::dup2(log, 2);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::execv(kBinary, argv.data());
    ::_exit(127);
  }
  ::close(log);
  m.pid = pid;
  m.paused = false;
  return true;
}

bool EtcdCluster::exited(unsigned i, int timeout_ms) {
  Member& m = members_[i];
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    int status = 0;
    pid_t r = ::waitpid(m.pid, &status, WNOHANG);
    if (r == m.pid || (r < 0 && errno == ECHILD)) {
      m.pid = -1;
      m.paused = false;
      return true;
    }
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void EtcdCluster::stop(unsigned i, int grace_ms) {
  Member& m = members_[i];
  if (m.pid <= 0) return;
  // A stopped process handles SIGTERM only once continued.
  if (m.paused) ::kill(m.pid, SIGCONT);
  ::kill(m.pid, SIGTERM);
  if (exited(i, grace_ms)) return;
  ::kill(m.pid, SIGKILL);
  exited(i, 10000);
}

void EtcdCluster::kill(unsigned i) {
  Member& m = members_[i];
  if (m.pid <= 0) return;
  ::kill(m.pid, SIGKILL);
  exited(i, 10000);
}

void EtcdCluster::pause(unsigned i) {
  Member& m = members_[i];
  if (m.pid <= 0) return;
  ::kill(m.pid, SIGSTOP);
  m.paused = true;
  // The stop takes effect asynchronously: until every thread is stopped, etcd may still answer.
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (Clock::now() < deadline) {
    bool all_stopped = true;
    std::error_code ec;
    for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(m.pid) + "/task", ec)) {
      std::ifstream f(task.path() / "stat");
      std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      size_t paren = stat.rfind(')');  // the command name may hold spaces; the state follows it
      char state = paren != std::string::npos && paren + 2 < stat.size() ? stat[paren + 2] : '?';
      if (state != 'T' && state != 't') all_stopped = false;
    }
    if (!ec && all_stopped) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

void EtcdCluster::resume(unsigned i) {
  Member& m = members_[i];
  if (m.pid <= 0) return;
  ::kill(m.pid, SIGCONT);
  m.paused = false;
}

bool EtcdCluster::restart(unsigned i, std::string* error) {
  std::string local;
  if (!error) error = &local;
  if (members_[i].pid > 0) stop(i);
  if (!spawn(i, error)) return false;
  if (!wait_healthy(i, 20000)) {
    *error = "etcd member " + members_[i].name + " did not become healthy after a restart:\n" + log_tail(i);
    return false;
  }
  return true;
}

bool EtcdCluster::wait_healthy(unsigned i, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (members_[i].pid <= 0) return false;
    int status = 0;
    if (::waitpid(members_[i].pid, &status, WNOHANG) == members_[i].pid) {
      members_[i].pid = -1;  // it exited (a bad flag, a port in use): the log says
      return false;
    }
    if (healthy(members_[i].client_port, 500)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

std::string EtcdCluster::log_tail(unsigned i, size_t bytes) const {
  std::ifstream f(members_[i].log_path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  return s.size() > bytes ? s.substr(s.size() - bytes) : s;
}

}  // namespace tern::test
