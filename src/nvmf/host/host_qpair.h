// HostQpair: the initiator's side of one NVMe/TCP connection (an admin or an I/O queue).
//
// Threads: lives on the reactor that connected it. Commands are HostCmds taken from the queue pair's
// own preallocated pool (no allocation per I/O); each completes through its callback on that reactor,
// never inside submit(). Write data goes in the capsule when it fits (IOCCSZ) and otherwise answers the
// controller's R2Ts with H2CData PDUs; read data is received straight into the caller's buffers.
//
// Every I/O command in flight counts on the reactor as an answer awaited from a peer (Reactor::await_begin):
// the reactor spins a little longer for it instead of sleeping. Admin commands (keep-alives, identify) do
// not count: they are rare, and one the target may hold for long (an Asynchronous Event Request) must not.
//
// Failures (connection loss, a TermReq, a malformed PDU from the target) fail every outstanding
// command with a status and call on_failure once; the owner decides whether to reconnect.
#pragma once

#include <array>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/small_function.h"
#include "net/socket.h"
#include "nvmf/spec.h"
#include "nvmf/tcp_pdu.h"
#include "reactor/task.h"

namespace tern {
class Reactor;
}

namespace tern::nvmf {

struct HostParams {
  std::string host;
  uint16_t port = 4420;
  std::string subnqn;
  std::string hostnqn;
  std::array<uint8_t, 16> hostid{};
  bool hdgst = false;
  bool ddgst = false;
  uint32_t kato_ms = 0;
  uint64_t connect_timeout_ns = 5'000'000'000ull;
  uint64_t admin_timeout_ns = 10'000'000'000ull;
};

class HostQpair;

// One command in flight. `iov` describes the data (write: source, read: destination).
struct HostCmd {
  nvme::Sqe sqe{};
  const iovec* iov = nullptr;
  int iovcnt = 0;
  uint32_t data_len = 0;
  bool write = false;  // data flows host to controller
  void (*done)(HostCmd* c, void* arg) = nullptr;
  void* arg = nullptr;
  // Result.
  nvme::Cqe cqe{};
  Errc transport_error = Errc::kOk;  // not kOk: the command never completed on the target
  nvme::CmdStatus status() const { return nvme::CmdStatus::decode(cqe.status); }
  // Queue-pair private.
  HostQpair* qp = nullptr;
  uint16_t cid = 0;
  bool busy = false;
  uint32_t received = 0;
  uint64_t deadline_ns = 0;
  alignas(8) uint8_t capsule[sizeof(nvme::tcp::CapsuleCmd) + 4];
  uint8_t ddgst[4];
  uint8_t ddgst_rx[4];
  net::SendItem send_item;
  struct H2C {
    alignas(8) uint8_t hdr[sizeof(nvme::tcp::DataHeader) + 4];
    uint8_t ddgst[4];
    net::SendItem item;
    HostCmd* cmd;
  } h2c;
  iovec slice[16];
  uint8_t dsm[16];  // a Dataset Management range for unmaps
  iovec dsm_iov{};
};

class HostQpair {
 public:
  // Connects, exchanges ICReq/ICResp and sends the fabrics Connect. `cntlid` 0xFFFF asks for a new
  // controller (admin queue); I/O queues pass the admin queue's. Runs on the calling reactor.
  static Task<Result<std::unique_ptr<HostQpair>>> Connect(const HostParams& p, uint16_t qid, uint16_t qsize,
                                                          uint16_t cntlid);
  ~HostQpair();

  uint16_t qid() const { return qid_; }
  uint16_t cntlid() const { return cntlid_; }
  uint16_t qsize() const { return qsize_; }
  uint32_t max_icd() const { return max_icd_; }  // in-capsule data limit (bytes)
  void set_max_icd(uint32_t b) { max_icd_ = b; }
  bool failed() const { return failed_; }
  size_t outstanding() const { return outstanding_; }

  // A free command slot, or null when the queue is full.
  HostCmd* get();
  void put(HostCmd* c);
  // Sends a prepared command (sqe fields other than CID, SGL and flags are the caller's).
  void submit(HostCmd* c);

  // Admin-style helper for control paths: one command with optional data in either direction.
  struct Reply {
    Errc transport = Errc::kOk;
    nvme::Cqe cqe{};
    std::vector<uint8_t> data;
    nvme::CmdStatus status() const { return nvme::CmdStatus::decode(cqe.status); }
    bool ok() const { return transport == Errc::kOk && status().ok(); }
  };
  Task<Reply> command(nvme::Sqe sqe, std::vector<uint8_t> data_out, uint32_t data_in_len, uint64_t timeout_ns);

  // Called once when the connection fails (after outstanding commands were failed).
  void set_on_failure(SmallFunction<void(Errc)> fn) { on_failure_ = std::move(fn); }
  // Fails everything outstanding with `why` and closes; `done` runs when the socket is gone.
  void close(Errc why, SmallFunction<void()> done);
  // Commands whose deadline passed.
  std::vector<HostCmd*> expired(uint64_t now_ns) const;
  // Fails every outstanding command with `e`, stops using the connection, calls on_failure.
  void fail(Errc e);

 private:
  HostQpair(int fd, const HostParams& p, uint16_t qid, uint16_t qsize);
  size_t on_data(const uint8_t* p, size_t n);
  void handle_resp(const nvme::Cqe& cqe);
  size_t handle_c2h(const uint8_t* p, size_t n, size_t hdr_total);
  void handle_r2t(const uint8_t* p);
  void complete(HostCmd* c);
  void fail_all(Errc e);
  int slice_iov(HostCmd* c, uint32_t off, uint32_t len, iovec* out, int max);

  HostParams params_;
  const uint16_t qid_;
  const uint16_t qsize_;
  uint16_t cntlid_ = 0xFFFF;
  std::unique_ptr<net::TcpConn> conn_;
  std::vector<std::unique_ptr<HostCmd>> cmds_;
  std::vector<HostCmd*> free_;
  size_t outstanding_ = 0;  // on I/O queues each counted on the reactor as an awaited answer (await_begin)
  Reactor* reactor_;         // the one it lives on
  bool hdgst_ = false, ddgst_ = false;
  uint32_t cpda_align_ = 4;
  uint32_t maxh2cdata_ = 0;
  uint32_t max_icd_ = 8192;
  bool ic_done_ = false;
  bool failed_ = false;
  bool closing_ = false;
  std::coroutine_handle<> ic_waiter_;
  Errc ic_error_ = Errc::kOk;
  SmallFunction<void(Errc)> on_failure_;
  alignas(8) uint8_t icreq_[sizeof(nvme::tcp::ICReq)];
  net::SendItem icreq_item_;
};

// Formats an NVMe status for humans: "generic 0x83 (reservation conflict)".
std::string describe_status(nvme::CmdStatus s);
// Maps an NVMe completion status to the device layer's error code.
Errc errc_from_status(nvme::CmdStatus s);

}  // namespace tern::nvmf
