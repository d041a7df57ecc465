// Connection: one NBD client connection, from the greeting to the close. Internal to src/nbd.
//
// Threads: created on, and confined to, the reactor the server handed the socket to. The handshake
// hops to the primary reactor for each option that names an export (or lists them) and comes back; in
// the transmission phase everything stays here: requests are parsed from the socket's receive buffer,
// WRITE payloads are received straight into this reactor's pooled buffers, device I/O goes through this
// reactor's channel, and replies (header + read data) leave through the socket's batched send queue.
//
// Requests are preallocated (ServerOptions::max_inflight of them) and move through explicit states; one
// function per transition. Nothing on the transmission path allocates.
//
// Closing: `shutdown` (remove_export, stop, NBD_CMD_DISC) stops taking requests, lets those in flight
// finish and send their replies, then closes the socket (or cuts it after drain_timeout_ms); `close_now`
// (protocol errors, the peer going away) closes at once. Either way the connection waits for its device
// requests, releases its channel, detaches from its export on the primary, and is deleted on its reactor.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bdev/bdev.h"
#include "nbd/buffers.h"
#include "nbd/protocol.h"
#include "nbd/server.h"
#include "net/socket.h"
#include "reactor/task_scope.h"
#include "reactor/timer.h"

namespace tern::nbd {

class Connection;

// Counters written only by the connection's reactor and read by the primary (list_exports), hence
// relaxed atomics updated with plain load + store: no locked instruction on the I/O path.
struct ConnCounters {
  std::atomic<uint64_t> reads{0}, writes{0}, flushes{0}, trims{0}, write_zeroes{0};
  std::atomic<uint64_t> read_bytes{0}, write_bytes{0}, errors{0};
  static void add(std::atomic<uint64_t>& c, uint64_t v) {
    c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
  }
  ExportCounters snapshot() const;
};

struct Req;
struct ReqSendItem : net::SendItem {
  Req* req = nullptr;
};
struct ConnSendItem : net::SendItem {
  Connection* conn = nullptr;
};

struct Req {
  enum class State : uint8_t {
    kFree,
    kWaitBuffer,   // READ parsed, waiting for a data buffer
    kRecvPayload,  // WRITE payload arriving into the buffers
    kDevice,       // on the device
    kSending,      // reply queued on the socket
  };
  State state = State::kFree;
  Connection* conn = nullptr;
  proto::Request hdr;
  uint32_t error = 0;  // NBD error for the reply
  // Data: pooled buffers described by iov (also used, pointing at the zero buffer, for NO_HOLE zeroing).
  BufferSet::Lease lease;
  iovec iov[BufferSet::kMaxChunks];
  int iovcnt = 0;
  int recv_next = 0;      // WRITE: first iov entry not yet received
  // Device I/O.
  BdevIo io;
  uint8_t step = 0;       // 0: the operation itself; 1: the flush after it (FUA)
  bool zero_by_write = false;  // WRITE_ZEROES done by writing zeros (NO_HOLE, or no device support)
  uint64_t zeroed = 0;    // bytes of it done
  // Reply.
  uint8_t reply[proto::kSimpleReplyLen];
  ReqSendItem item;
  Req* next_wait = nullptr;
};

class Connection {
 public:
  Connection(Server& server, int fd, uint64_t id, std::string peer);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Sends the greeting and starts reading.
  void start();
  // Stops taking requests; those in flight finish and are answered, then the socket closes (cut after
  // the drain timeout). Before the transmission phase it closes at once.
  void shutdown(const char* why);
  // Resets the device channel if requests are on it (server stop: a hung device must not hold us).
  void abort_device_io();

  uint64_t id() const { return id_; }
  const std::string& peer() const { return peer_; }
  unsigned reactor() const { return reactor_.id(); }
  const ConnCounters& counters() const { return counters_; }

 private:
  enum class Phase : uint8_t { kFlags, kOptions, kTransmission, kDraining };

  // Receiving.
  size_t on_data(const uint8_t* p, size_t n);
  size_t on_client_flags(const uint8_t* p, size_t n);
  size_t on_option(const uint8_t* p, size_t n);
  size_t on_request(const uint8_t* p, size_t n);

  // Handshake.
  static Task<void> run_option(Connection* self, uint32_t opt, std::vector<uint8_t> data, proto::OptionPlan plan);
  void finish_option(const proto::OptionOutcome& o);
  void send_handshake();
  static void on_handshake_sent(net::SendItem* item, Errc e);

  // Requests.
  Req* alloc_req(const proto::Request& h);
  void start_read(Req* r);
  void recv_payload(Req* r);
  void on_payload(Req* r, Errc e);
  void start_write_zeroes(Req* r);
  void submit_zero_chunk(Req* r);
  void submit(Req* r, IoType t, uint64_t offset_bytes, uint64_t len_bytes, iovec* iov, int iovcnt);
  static void on_io_done(BdevIo* io, void* arg);
  static void on_reset_done(BdevIo* io, void* arg);
  void io_step(Req* r);
  void reply(Req* r);
  static void on_reply_sent(net::SendItem* item, Errc e);
  void free_req(Req* r);
  void wait_for_buffers();
  void on_buffers();

  // Closing.
  void begin_drain(const char* why);
  void check_drained();
  void close_now(const char* why);
  static Task<void> finish(Connection* self);

  Server& server_;
  Reactor& reactor_;
  const uint64_t id_;
  const std::string peer_;
  BufferSet& buffers_;
  std::unique_ptr<net::TcpConn> conn_;
  Phase phase_ = Phase::kFlags;
  proto::ClientFlags client_flags_;

  // Handshake output: one reply at a time (a client must wait for the final reply to an option).
  uint8_t greeting_[proto::kGreetingLen];
  net::SendItem greeting_item_;
  std::vector<uint8_t> hs_out_;
  ConnSendItem hs_item_;
  bool hs_busy_ = false;            // an option is being looked up or its reply sent
  bool close_after_reply_ = false;  // NBD_OPT_ABORT

  // Transmission.
  Export* export_ = nullptr;  // the export attached to (owned by the primary; only handed back)
  ChannelRef ch_;
  proto::Geometry geo_;
  bool write_cache_ = false, can_flush_ = false, can_unmap_ = false, can_write_zeroes_ = false;
  std::vector<std::unique_ptr<Req>> reqs_;
  std::vector<Req*> free_;
  uint32_t active_ = 0;          // requests not free
  uint32_t dev_inflight_ = 0;    // BdevIos on the device (resets included)
  uint32_t discard_left_ = 0;    // payload of a refused WRITE still to be skipped
  bool parse_blocked_ = false;   // on_data returned 0 for want of a request slot or write buffers
  Req* wait_head_ = nullptr;     // READs waiting for buffers, in order
  Req* wait_tail_ = nullptr;
  BufferSet::Waiter buf_waiter_;
  BdevIo reset_io_;
  bool resetting_ = false;
  ConnCounters counters_;

  // Closing.
  const char* drain_why_ = "";
  Timer drain_timer_;
  Timer handshake_timer_;
  // Requests in use, option look-ups on the primary and device resets: teardown awaits them.
  TaskScope scope_{"nbd connection"};
  bool closing_ = false;
  bool conn_closed_ = false;
};

}  // namespace tern::nbd
