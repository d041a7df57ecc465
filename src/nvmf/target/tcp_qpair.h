// TcpQpair: one NVMe/TCP connection on the target side — an admin or an I/O queue pair.
//
// Threads: created on, and confined to, the reactor its connection was handed to. It parses PDUs from
// the connection's receive buffer, runs I/O commands against the namespace devices through that
// reactor's channels, hands admin and fabrics commands to the controller on the primary reactor, and
// sends responses, data and R2Ts through the connection's batched send queue.
//
// Requests move through explicit states (TcpReq::State, diagram in docs/design/nvmf.md): set_state() is
// the only place a state changes; it checks the transition is legal and keeps per-state counts (the
// target's statistics). Request objects, PDU headers and send items are preallocated per queue pair,
// data buffers come from the reactor's pools: the I/O path allocates nothing.
//
// Bytes come and go through a net::Stream: a TCP connection in production, a MemoryStream in unit tests
// (tests/unit/nvmf), so every protocol decision here is testable without a socket.
//
// Lifetime: every request in use and every task of the queue pair (admin commands, Connect and
// reservations handed to the primary reactor) is counted by the queue pair's TaskScope. Teardown closes
// the stream, then awaits the scope, then detaches from the controller: nothing can call back into a
// queue pair that is gone.
#pragma once

#include <array>
#include <bitset>
#include <cstdint>
#include <memory>
#include <vector>

#include "bdev/bdev.h"
#include "net/buffer_pool.h"
#include "net/stream.h"
#include "nvmf/target/controller.h"
#include "nvmf/target/subsystem.h"
#include "nvmf/tcp_pdu.h"
#include "reactor/task_scope.h"

namespace tern::nvmf {

class Target;
class TcpQpair;
struct ConnectResult;

struct TcpReq;
struct ReqSendItem : net::SendItem {
  TcpReq* req = nullptr;
};

// A queue pair's channel to one namespace. Requests on the device keep it alive: when the namespace
// is removed meanwhile it is only marked dropped, and it goes with the last of them.
struct NsChannel {
  TcpQpair* qp = nullptr;
  uint32_t nsid = 0;
  ChannelRef ch;
  uint32_t inflight = 0;  // device requests submitted on it and not yet completed
  bool dropped = false;
  bool resetting = false;  // reset_io is on the device (TcpQpair::abort_device_io)
  BdevIo reset_io;
};

struct TcpReq {
  // Where a request is (docs/design/nvmf.md draws the transitions; TcpQpair::set_state checks them).
  enum class State : uint8_t {
    kFree,          // in the free list
    kNew,           // a command capsule was parsed; its first step is being decided
    kNeedBuffer,    // waiting for a data buffer from the reactor's pool
    kAwaitData,     // R2T sent, H2CData arriving
    kExecuting,     // on the device (one step of it: see Step)
    kAwaitAdmin,    // handed to the primary reactor (admin, fabrics Connect, reservations)
    kParkedAer,     // an Asynchronous Event Request the controller holds
    kSending,       // data and/or response queued on the connection
  };
  static constexpr size_t kStateCount = 8;
  // Multi-step device commands: which step is on the device while kExecuting.
  enum class Step : uint8_t {
    kSingle,       // a command done in one device request (read, write, write zeroes, flush)
    kCompareRead,  // Compare: reading the blocks to compare against the host's data
    kDsmRange,     // Dataset Management: deallocating one range (range_next counts them)
  };
  static bool legal(State from, State to);
  static const char* state_name(State s);
  static const char* step_name(Step s);

  State state = State::kFree;
  Step step = Step::kSingle;
  TcpQpair* qp = nullptr;
  uint16_t idx = 0;  // also the R2T transfer tag
  nvme::Sqe sqe{};
  uint16_t cid = 0;
  uint32_t data_len = 0;      // bytes the command transfers (from SGL1)
  bool h2c = false;           // data flows host to controller
  bool icd = false;           // data arrived in the capsule
  uint8_t* buf = nullptr;
  net::BufferPool* pool = nullptr;
  uint32_t h2c_received = 0;
  uint8_t ddgst_rx[4];
  nvme::CmdStatus status;
  uint32_t dw0 = 0;
  uint32_t dw1 = 0;
  // Device I/O.
  BdevIo io;
  NsChannel* ch = nullptr;
  uint32_t block_size = 0;
  uint32_t nsid = 0;
  uint32_t range_next = 0;     // Dataset Management: the next range to deallocate
  uint8_t* aux = nullptr;      // compare: the data read back
  net::BufferPool* aux_pool = nullptr;
  std::vector<uint8_t> admin_out;  // admin data going to the host (control path only)
  // Outgoing PDUs.
  alignas(8) uint8_t resp_hdr[sizeof(nvme::tcp::CapsuleResp) + 4];
  alignas(8) uint8_t c2h_hdr[sizeof(nvme::tcp::DataHeader) + 4];
  alignas(8) uint8_t r2t_hdr[sizeof(nvme::tcp::R2T) + 4];
  uint8_t ddgst_tx[4];
  ReqSendItem c2h_item, resp_item, r2t_item;
  uint8_t sends = 0;  // c2h/resp items not yet handed to the kernel
  bool cid_held = false;  // this request owns its bit in cids_ (not a conflicting duplicate)
  TcpReq* next_wait = nullptr;  // buffer / R2T wait lists
};

struct TcpQpairStats {
  uint64_t commands = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  // Requests in each state now, and how many entered each state so far (TcpReq::State order).
  std::array<uint32_t, TcpReq::kStateCount> in_state{};
  std::array<uint64_t, TcpReq::kStateCount> entered{};
};

class TcpQpair {
 public:
  // Receive buffer of a connection: a capsule with the largest in-capsule data, and then some.
  static constexpr size_t kRecvBufferSize = 128 * 1024;

  // On the reactor that owns `stream`.
  TcpQpair(Target& target, std::unique_ptr<net::Stream> stream, ListenAddr local, uint64_t id);
  ~TcpQpair();
  TcpQpair(const TcpQpair&) = delete;
  TcpQpair& operator=(const TcpQpair&) = delete;

  void start();
  // Begins an orderly teardown: stops reading, closes the stream, waits for every request and task of
  // the queue pair to end, detaches from the controller, and deletes the queue pair.
  void close(const char* why);

  // From the controller (delivered on this reactor by message).
  void complete_admin(uint16_t cid, AdminResult r);
  void controller_detached();

  // Drops this queue pair's channel to a namespace that is being removed.
  void drop_namespace(Subsystem* s, uint32_t nsid);
  // Target shutdown: resets the channels that still have requests on a device, which aborts requests
  // a hung (or fault-injected) device would otherwise hold forever.
  void abort_device_io();

  uint64_t id() const { return id_; }
  uint16_t qid() const { return qid_; }
  Controller* controller() const { return ctrl_; }
  Subsystem* subsystem() const { return subsys_; }
  const ListenAddr& local() const { return local_; }
  const std::string& peer() const { return conn_->peer(); }
  const TcpQpairStats& stats() const { return stats_; }

 private:
  // Receive side.
  size_t on_data(const uint8_t* p, size_t n);
  size_t handle_icreq(const uint8_t* p, size_t n);
  size_t handle_capsule(const uint8_t* p, size_t n, size_t hdr_total);
  size_t handle_h2c_data(const uint8_t* p, size_t n, size_t hdr_total);
  void on_h2c_received(TcpReq* r, uint32_t datal, bool last, Errc e);
  void fatal(nvme::tcp::Fes fes, uint32_t fei, const uint8_t* hdr, size_t hdr_len);

  // Request lifecycle.
  void set_state(TcpReq* r, TcpReq::State to);
  TcpReq* alloc_req(uint16_t cid);
  void free_req(TcpReq* r);
  bool get_buffer(TcpReq* r, uint32_t len);
  void wait_for_buffer(TcpReq* r, uint32_t len);
  void start_request(TcpReq* r);
  void request_data(TcpReq* r);
  void send_r2t(TcpReq* r);
  void data_ready(TcpReq* r);
  void execute(TcpReq* r);
  void execute_io(TcpReq* r);
  void execute_admin(TcpReq* r);
  void execute_fabrics(TcpReq* r);
  void execute_connect(TcpReq* r);
  void submit_io(TcpReq* r, IoType t, uint64_t lba, uint64_t nblocks);
  static void on_io_done(BdevIo* io, void* arg);
  static void on_reset_done(BdevIo* io, void* arg);
  void release_channel(NsChannel* c);
  void io_step(TcpReq* r);
  void complete(TcpReq* r);
  void send_c2h(TcpReq* r, const uint8_t* data, uint32_t len, bool success_flag);
  void send_response(TcpReq* r);
  static void on_sent(net::SendItem* item, Errc e);
  void request_done(TcpReq* r);
  void release_cid(TcpReq* r);
  static Task<void> finish_close(TcpQpair* self);
  bool refresh_view();
  NsChannel* channel_for(const NamespaceView& ns);
  void finish_io(TcpReq* r);
  nvme::CmdStatus check_access(const NamespaceView& ns, uint8_t opc) const;
  void finish_header(uint8_t* hdr, size_t hlen);

  // Hands `r` to the primary reactor and back: `Work(self, r)` runs on the primary and returns a value
  // (or a Task of one); then `Done(self, r, value)` finishes the request on this reactor. While it is
  // away the request waits in kAwaitAdmin and the queue pair does not touch it (the primary reads its
  // command and data); the hop is a task of the queue pair's scope.
  template <auto Work, auto Done>
  void on_primary(TcpReq* r);
  // The three kinds of hop: admin commands, fabrics Connect, reservation commands on an I/O queue.
  static Task<AdminResult> admin_work(TcpQpair* self, TcpReq* r);
  static void admin_done(TcpQpair* self, TcpReq* r, AdminResult res);
  static ConnectResult connect_work(TcpQpair* self, TcpReq* r);
  static void connect_done(TcpQpair* self, TcpReq* r, ConnectResult res);
  static AdminResult reservation_work(TcpQpair* self, TcpReq* r);

  Target& target_;
  const uint64_t id_;
  const ListenAddr local_;
  Reactor& reactor_;
  std::unique_ptr<net::Stream> conn_;
  // Requests in use and tasks of this queue pair; teardown awaits it (see the class comment).
  TaskScope scope_{"nvmf queue pair"};
  // Negotiated at ICReq.
  bool ic_done_ = false;
  bool hdgst_ = false;
  bool ddgst_ = false;
  uint32_t hpda_align_ = 4;  // host PDU data alignment in bytes
  // Set by Connect.
  uint16_t qid_ = 0;
  uint16_t qsize_ = 0;
  bool sqflow_disabled_ = false;
  uint16_t sqhd_ = 0;
  Controller* ctrl_ = nullptr;
  ControllerIoCounters* io_ctr_ = nullptr;  // I/O queues: the controller's slot for this reactor
  Subsystem* subsys_ = nullptr;
  uint16_t cntlid_ = 0;
  std::array<uint8_t, 16> hostid_{};
  bool connecting_ = false;
  // Requests.
  std::vector<std::unique_ptr<TcpReq>> reqs_;
  std::vector<TcpReq*> free_reqs_;
  std::bitset<65536> cids_;
  // I/O view.
  std::shared_ptr<const SubsystemView> view_;
  uint64_t view_version_ = 0;
  std::vector<std::unique_ptr<NsChannel>> channels_;
  // Requests waiting for a data buffer, and whether parsing waits for one (in-capsule data).
  TcpReq* buf_wait_head_ = nullptr;
  TcpReq* buf_wait_tail_ = nullptr;
  bool parse_waits_for_buffer_ = false;
  net::BufferPool::Waiter buf_waiter_;
  net::BufferPool* waiting_on_ = nullptr;
  void on_buffers_available();
  // Teardown.
  bool closing_ = false;
  bool conn_closed_ = false;
  bool terminating_ = false;  // a C2HTermReq is on its way
  alignas(8) uint8_t term_pdu_[sizeof(nvme::tcp::TermReq) + nvme::tcp::kMaxTermReqData];
  net::SendItem term_item_;
  alignas(8) uint8_t icresp_[sizeof(nvme::tcp::ICResp)];
  net::SendItem icresp_item_;
  TcpQpairStats stats_;
};

}  // namespace tern::nvmf
