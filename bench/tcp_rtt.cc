// tcp_rtt: the floor under any NVMe/TCP QD1 latency on this machine. Two threads on two cores exchange
// a 72-byte "command" and a 4120-byte "response" (the sizes of a 4 KiB read's capsule and C2HData PDU)
// over loopback TCP, with plain send/recv and no protocol at all. Reported per round trip, for a
// receiver that blocks in recv (what a sleeping reactor costs) and one that spins on MSG_DONTWAIT
// (what a polling reactor can at best reach).
//
//   tcp_rtt [--client-core 0] [--server-core 1] [--rounds 100000] [--json]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace {

constexpr size_t kCmd = 72;
constexpr size_t kResp = 4096 + 24;

void pin(int core) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(core, &s);
  pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

bool recv_all(int fd, char* buf, size_t n, bool spin) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = recv(fd, buf + got, n - got, spin ? MSG_DONTWAIT : 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (r <= 0) return false;
    got += size_t(r);
  }
  return true;
}

bool send_all(int fd, const char* buf, size_t n) {
  size_t put = 0;
  while (put < n) {
    ssize_t r = send(fd, buf + put, n - put, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    put += size_t(r);
  }
  return true;
}

void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "tcp_rtt: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

// One measurement: a fresh connection, `rounds` exchanges, mean microseconds per round trip.
double measure(int client_core, int server_core, long rounds, bool spin) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  if (lfd < 0) die("socket");
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = 0;  // a free port
  if (bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) die("bind");
  socklen_t len = sizeof sa;
  if (getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) die("getsockname");
  if (listen(lfd, 1) != 0) die("listen");

  std::thread server([&] {
    pin(server_core);
    int c = accept(lfd, nullptr, nullptr);
    if (c < 0) die("accept");
    nodelay(c);
    static char buf[kResp];
    while (recv_all(c, buf, kCmd, spin) && send_all(c, buf, kResp)) {
    }
    close(c);
  });

  pin(client_core);
  int c = socket(AF_INET, SOCK_STREAM, 0);
  if (c < 0) die("socket");
  if (connect(c, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) die("connect");
  nodelay(c);
  static char buf[kResp];
  std::memset(buf, 1, sizeof buf);
  for (int i = 0; i < 1000; ++i) {  // warm up
    if (!send_all(c, buf, kCmd) || !recv_all(c, buf, kResp, spin)) die("warm-up exchange");
  }
  auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < rounds; ++i) {
    if (!send_all(c, buf, kCmd) || !recv_all(c, buf, kResp, spin)) die("exchange");
  }
  auto t1 = std::chrono::steady_clock::now();
  close(c);
  server.join();
  close(lfd);
  return std::chrono::duration<double, std::micro>(t1 - t0).count() / double(rounds);
}

}  // namespace

int main(int argc, char** argv) {
  int client_core = 0, server_core = 1;
  long rounds = 100000;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "tcp_rtt: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--client-core") {
      client_core = std::atoi(next());
    } else if (a == "--server-core") {
      server_core = std::atoi(next());
    } else if (a == "--rounds") {
      rounds = std::atol(next());
    } else if (a == "--json") {
      json = true;
    } else {
      std::fprintf(stderr,
                   "usage: tcp_rtt [--client-core N] [--server-core N] [--rounds N] [--json]\n"
                   "Loopback TCP round trip (72-byte request, 4120-byte reply) with blocking and spinning "
                   "receivers: the floor under NVMe/TCP QD1 latency on this machine.\n");
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  if (rounds <= 0) rounds = 1;
  double blocking = measure(client_core, server_core, rounds, false);
  double spinning = measure(client_core, server_core, rounds, true);
  if (json) {
    std::printf("{\"blocking_us\":%.2f,\"spinning_us\":%.2f}\n", blocking, spinning);
  } else {
    std::printf("loopback TCP round trip: blocking recv %.1f us, spinning recv %.1f us\n", blocking, spinning);
  }
  return 0;
}
