// Controller: one host's association with a subsystem, created by the admin queue's Connect.
//
// Threads: lives on the primary reactor. Its queue pairs live wherever their connections landed; they
// reach the controller by message (admin commands, attach/detach) and the controller reaches them the
// same way (AER completions, teardown). A controller is destroyed only after every queue pair detached
// and the work it started (a shutdown flush) has ended: its TaskScope.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <set>
#include <string>
#include <vector>

#include "nvmf/spec.h"
#include "nvmf/target/subsystem.h"
#include "reactor/task.h"
#include "reactor/task_scope.h"
#include "reactor/timer.h"

namespace tern::nvmf {

class Target;
class TcpQpair;

// I/O counters of one controller on one reactor. Written only by that reactor's queue pairs (plain
// relaxed stores: one writer per slot), read by the primary reactor for reporting. Own cache line each,
// so reactors do not share one on the I/O path.
struct alignas(64) ControllerIoCounters {
  std::atomic<uint64_t> commands{0};
  std::atomic<uint64_t> read_bytes{0};
  std::atomic<uint64_t> write_bytes{0};
  static void add(std::atomic<uint64_t>& c, uint64_t n) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
};
struct ControllerIoTotals {
  uint64_t commands = 0, read_bytes = 0, write_bytes = 0;
};

// A queue pair as seen from the primary reactor.
struct QpairRef {
  TcpQpair* qp = nullptr;
  unsigned reactor = 0;
  uint16_t qid = 0;
};

// An admin (or fabrics) command handed to the primary reactor, and what comes back.
struct AdminCommand {
  nvme::Sqe sqe;
  std::vector<uint8_t> data;  // host-to-controller data, if any
  uint32_t xfer_len = 0;      // the command's data transfer length (its SGL), either direction
};
struct AdminResult {
  nvme::CmdStatus status;
  uint32_t dw0 = 0;
  uint32_t dw1 = 0;
  std::vector<uint8_t> data;  // controller-to-host data, if any
  bool deferred = false;      // an AER: completed later through TcpQpair::complete_admin
};

class Controller {
 public:
  Controller(Target& target, Subsystem& subsys, uint16_t cntlid, std::string hostnqn,
             std::array<uint8_t, 16> hostid, uint32_t kato_ms, const ListenAddr& listener, QpairRef admin);
  ~Controller();

  uint16_t cntlid() const { return cntlid_; }
  Subsystem& subsystem() { return subsys_; }
  const std::string& hostnqn() const { return hostnqn_; }
  const std::array<uint8_t, 16>& hostid() const { return hostid_; }
  uint32_t kato_ms() const { return kato_ms_; }
  uint32_t io_queues() const { return io_queues_; }
  bool enabled() const { return cc_ & nvme::kCcEn; }
  // Volatile Write Cache feature (WCE). Read by I/O queue pairs on any reactor: with the cache
  // disabled, writes must be durable before they complete.
  bool write_cache_enabled() const { return vwc_enabled_.load(std::memory_order_relaxed); }
  size_t attached_io_queues() const { return io_qpairs_.size(); }
  // The listening address the host connected its admin queue through (a path, for multipath hosts).
  const ListenAddr& listener() const { return listener_; }
  // The I/O counters slot of `reactor` (only that reactor writes it); the sum over all reactors.
  ControllerIoCounters& io_counters(unsigned reactor) { return io_counters_[reactor]; }
  ControllerIoTotals io_totals() const;

  // Admin and fabrics commands of the admin queue.
  Task<AdminResult> execute(AdminCommand cmd);

  // I/O queue Connect: checks and records the queue pair.
  nvme::CmdStatus attach_io_qpair(QpairRef ref, uint16_t qid, const std::string& hostnqn,
                               const std::array<uint8_t, 16>& hostid, uint32_t* ipo, uint8_t* iattr);
  // A queue pair of this controller closed. When the admin queue goes, the controller closes the rest
  // and is destroyed once they are gone.
  void detach(TcpQpair* qp);

  // Events.
  void namespace_changed(uint32_t nsid);
  void ana_changed();
  void discovery_changed();
  void reservation_notice(uint8_t type, uint32_t nsid);

  // Closes every queue pair (keep-alive expiry, subsystem deletion, controller reset of I/O queues).
  void close_all(const char* why);
  void close_io_queues(const char* why);
  bool closing() const { return closing_; }

 private:
  AdminResult property_get(const nvme::PropertyCmd& c);
  AdminResult property_set(const nvme::PropertyCmd& c);
  Task<AdminResult> identify(const nvme::Sqe& s);
  Task<AdminResult> get_log_page(const nvme::Sqe& s, uint32_t xfer_len);
  AdminResult get_features(const nvme::Sqe& s);
  AdminResult set_features(const nvme::Sqe& s, const std::vector<uint8_t>& data);
  AdminResult async_event_request(const nvme::Sqe& s);
  Task<AdminResult> vendor_command(AdminCommand cmd);
  void fill_identify_controller(nvme::IdentifyController& id);
  std::vector<uint8_t> discovery_log();
  std::vector<uint8_t> ana_log(bool groups_only);
  Task<std::vector<uint8_t>> smart_log();
  void raise_event(uint32_t dw0, uint8_t log_id);
  void keep_alive();
  void keep_alive_expired();
  Task<void> shutdown_flush();

  Target& target_;
  Subsystem& subsys_;
  const uint16_t cntlid_;
  const std::string hostnqn_;
  const std::array<uint8_t, 16> hostid_;
  uint32_t kato_ms_;
  const ListenAddr listener_;
  QpairRef admin_;
  std::vector<QpairRef> io_qpairs_;
  // Registers.
  uint32_t cc_ = 0;
  uint32_t csts_ = 0;
  bool reset_pending_ = false;  // CC.EN went to 0; CSTS.RDY clears once the I/O queues are gone
  // Features.
  uint32_t io_queues_;
  bool io_queues_set_ = false;
  uint32_t aec_ = 0;
  std::atomic<bool> vwc_enabled_{true};
  // Asynchronous events: outstanding requests (command ids) and events waiting for one.
  std::deque<uint16_t> aer_cids_;
  std::deque<uint32_t> pending_events_;
  std::set<uint8_t> masked_logs_;  // event reported, log page not yet read
  std::set<uint32_t> changed_ns_;
  bool changed_ns_overflow_ = false;
  std::deque<nvme::ReservationNotificationLog> resv_log_;
  uint64_t resv_log_count_ = 0;
  std::vector<ControllerIoCounters> io_counters_;  // one per reactor
  Timer kato_timer_;
  bool closing_ = false;
  bool admin_detached_ = false;
  bool destroying_ = false;
  // Work the controller started that outlives a command (the shutdown flush); it is destroyed only after
  // this is empty.
  TaskScope scope_{"nvmf controller"};
};

}  // namespace tern::nvmf
