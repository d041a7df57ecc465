// tern-ha-node's PathWatcher, pass by pass, against a fake sysfs tree, a fake `nvme` on PATH (it records its
// arguments) and a small HTTP server playing the agent's GET /v1/volumes/{uuid}. The real thing (the
// kernel's paths, a switch-over under fio) is tests/system/test_csi_kernel.py; this holds the decisions.
#include "csi/ha_node.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

using namespace tern;
using namespace tern::csi;
namespace fs = std::filesystem;

namespace {

constexpr const char* kUuid = "6c1f3a52-8d0e-4b7a-9c55-0e7d2b4a9f10";
constexpr const char* kHost = "nqn.2014-08.org.nvmexpress:uuid:host-a";

// Answers every request with the body set last (200), or 404 when it is empty.
class FakeAgent {
 public:
  FakeAgent() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    socklen_t len = sizeof(a);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    ::listen(fd_, 8);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeAgent() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  void set(const std::string& body) {
    std::lock_guard l(mu_);
    body_ = body;
  }
  int requests() const { return requests_.load(); }

 private:
  void serve() {
    while (!stop_) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string in;
      char buf[4096];
      while (in.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = ::recv(c, buf, sizeof(buf), 0);
        if (n <= 0) break;
        in.append(buf, size_t(n));
      }
      requests_++;
      std::string body;
      {
        std::lock_guard l(mu_);
        body = body_;
      }
      std::string out = body.empty() ? "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                                     : "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                                           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
      (void)::send(c, out.data(), out.size(), MSG_NOSIGNAL);
      ::close(c);
    }
  }
  int fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::mutex mu_;
  std::string body_;
};

std::string volume(const std::string& state, const std::string& addr, const std::string& allowed = kHost) {
  return R"({"uuid":")" + std::string(kUuid) + R"(","target":{"node":"node2","state":")" + state +
         R"(","uri":"nvmf://)" + addr + "/nqn.2026-11.io.tern:" + kUuid + R"(","allowed_hosts":[")" + allowed + R"("]}})";
}

class Watcher : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("tern-ha-node-" + std::to_string(getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "bin");
    // The fake nvme: records its arguments, succeeds.
    std::ofstream(root_ / "bin/nvme") << "#!/bin/sh\necho \"$*\" >> " << (root_ / "nvme.log").string() << "\n";
    fs::permissions(root_ / "bin/nvme", fs::perms::owner_all);
    old_path_ = std::getenv("PATH") ? std::getenv("PATH") : "";
    setenv("PATH", ((root_ / "bin").string() + ":" + old_path_).c_str(), 1);
    WatcherOptions o;
    o.host_nqn = kHost;
    o.sys_root = (root_ / "sys").string();
    o.dead_after_ms = 0;
    o.recheck_ms = 0;
    o.retry_ms = 0;
    o.connect_timeout_s = 10;
    csi::AgentOptions ao;
    ao.urls = {fake_.url()};
    ao.timeout_s = 5;
    agent_ = std::make_unique<Agent>(ao);
    watcher_ = std::make_unique<PathWatcher>(o, *agent_);
  }
  void TearDown() override {
    setenv("PATH", old_path_.c_str(), 1);
    fs::remove_all(root_);
  }
  void controller(const std::string& name, const std::string& addr, const std::string& state) {
    fs::path d = root_ / "sys/class/nvme" / name;
    fs::create_directories(d);
    std::ofstream(d / "subsysnqn") << "nqn.2026-11.io.tern:" << kUuid << "\n";
    std::ofstream(d / "transport") << "tcp\n";
    std::ofstream(d / "address") << addr << "\n";
    std::ofstream(d / "state") << state << "\n";
  }
  std::string nvme_log() {
    std::ifstream f(root_ / "nvme.log");
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  fs::path root_;
  std::string old_path_;
  FakeAgent fake_;
  std::unique_ptr<Agent> agent_;
  std::unique_ptr<PathWatcher> watcher_;
};

}  // namespace

TEST_F(Watcher, ConnectsTheNewTargetThenRemovesTheDeadPath) {
  controller("nvme1", "traddr=10.0.0.1,trsvcid=8420", "connecting");
  std::ofstream(root_ / "sys/class/nvme/nvme1/ctrl_loss_tmo") << "600\n";
  fake_.set(volume("published", "10.0.0.2:8420"));
  auto done = watcher_->pass();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_NE(done[0].find("new path to its target on node2 (10.0.0.2:8420)"), std::string::npos) << done[0];
  std::string log = nvme_log();
  EXPECT_NE(log.find("connect --transport=tcp --traddr=10.0.0.2 --trsvcid=8420"), std::string::npos) << log;
  EXPECT_NE(log.find(std::string("--hostnqn=") + kHost), std::string::npos) << log;
  EXPECT_NE(log.find("--ctrl-loss-tmo=600"), std::string::npos) << log;  // the old path's setting
  EXPECT_EQ(log.find("disconnect"), std::string::npos) << log;  // not before the new path is live

  // The kernel made the new path; while it connects the dead one stays.
  controller("nvme2", "traddr=10.0.0.2,trsvcid=8420", "connecting");
  EXPECT_TRUE(watcher_->pass().empty());
  EXPECT_EQ(nvme_log().find("disconnect"), std::string::npos);
  // Live: the dead path goes.
  controller("nvme2", "traddr=10.0.0.2,trsvcid=8420", "live");
  done = watcher_->pass();
  ASSERT_EQ(done.size(), 1u) << nvme_log();
  EXPECT_NE(done[0].find("removed its dead path nvme1"), std::string::npos) << done[0];
  EXPECT_NE(nvme_log().find("disconnect --device=nvme1"), std::string::npos);
}

TEST_F(Watcher, LeavesAloneWhatIsNotItsToFollow) {
  controller("nvme1", "traddr=10.0.0.1,trsvcid=8420", "connecting");
  // Published for another host (the pod moved): the node plugin's business.
  fake_.set(volume("published", "10.0.0.2:8420", "nqn.2014-08.org.nvmexpress:uuid:host-b"));
  EXPECT_TRUE(watcher_->pass().empty());
  // Being republished: waited for.
  fake_.set(volume("republishing", "10.0.0.1:8420"));
  EXPECT_TRUE(watcher_->pass().empty());
  // Still on the dead node: the kernel keeps reconnecting; nothing to connect.
  fake_.set(volume("published", "10.0.0.1:8420"));
  EXPECT_TRUE(watcher_->pass().empty());
  // Unknown to the agent.
  fake_.set("");
  EXPECT_TRUE(watcher_->pass().empty());
  EXPECT_GE(fake_.requests(), 4);
  EXPECT_EQ(nvme_log(), "");
}

TEST_F(Watcher, ASubsystemOfAnotherSystemOrTransportIsNotLookedAt) {
  fs::path d = root_ / "sys/class/nvme/nvme4";
  fs::create_directories(d);
  std::ofstream(d / "subsysnqn") << "nqn.2014-08.org.example:other\n";
  std::ofstream(d / "transport") << "tcp\n";
  std::ofstream(d / "address") << "traddr=10.0.0.9,trsvcid=4420\n";
  std::ofstream(d / "state") << "connecting\n";
  controller("nvme5", "traddr=10.0.0.1,trsvcid=8420", "live");
  std::ofstream(root_ / "sys/class/nvme/nvme5/transport") << "rdma\n";
  EXPECT_TRUE(watcher_->pass().empty());
  EXPECT_EQ(fake_.requests(), 0);
  EXPECT_EQ(nvme_log(), "");
}
