// The NVMe/TCP target: subsystems, listeners, controllers and the queue pairs that serve hosts.
//
// Threads (docs/design/nvmf.md has the full picture):
//  - Target, Subsystem and Controller state lives on the primary reactor. The public methods below
//    run there (ReactorSet::run_sync(0, ...) from other threads).
//  - Each TCP connection (a queue pair) lives on one reactor, chosen round-robin at accept time, and
//    does its socket and device I/O there. I/O commands never leave that reactor; admin and fabrics
//    commands are handed to the primary reactor and their completions come back.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bdev/registry.h"
#include "common/result.h"
#include "net/buffer_pool.h"
#include "net/socket.h"
#include "nvmf/target/controller.h"
#include "nvmf/target/subsystem.h"
#include "nvmf/target/tcp_qpair.h"
#include "reactor/reactor_set.h"
#include "reactor/task_scope.h"

namespace tern::nvmf {

class Controller;
class TcpQpair;
struct QpairRef;
struct AdminResult;

// A vendor-specific admin command (opcodes C0h-FFh; tern's are in nvmf/vendor.h) for one namespace,
// after the target checked that the namespace exists and that the host's reservation access allows a
// write. The handler answers with the command's status (and DW0).
struct VendorCommand {
  nvme::Sqe sqe;
  std::string subnqn;
  uint32_t nsid = 0;
  std::string bdev;  // the namespace's device
  std::string hostnqn;
  std::array<uint8_t, 16> hostid{};
  std::vector<uint8_t> data;  // host-to-controller data
};
using VendorHandler = std::function<Task<AdminResult>(VendorCommand)>;

struct ConnectResult {
  nvme::CmdStatus status;
  uint32_t dw0 = 0;  // CNTLID on success; IATTR/IPO for Invalid Parameters
  Controller* ctrl = nullptr;
  Subsystem* subsys = nullptr;
  uint16_t cntlid = 0;
};

struct TargetOptions {
  uint32_t max_queue_depth = 128;      // I/O queue entries (CAP.MQES + 1)
  uint32_t max_admin_queue_depth = 32;
  uint32_t max_io_queues = 64;         // per controller
  uint32_t in_capsule_data_size = 8192;
  uint32_t max_io_size = 128 * 1024;   // MDTS
  uint32_t max_h2c_data = 128 * 1024;  // MAXH2CDATA
  bool c2h_success = true;             // skip the response capsule after successful reads
  uint32_t max_keep_alive_ms = 120'000;
  uint32_t default_keep_alive_ms = 120'000;  // when the host asks for none on an I/O controller... (0 disables)
  std::string firmware = "0.1";
  size_t small_buffers_per_reactor = 4096;   // 8 KiB each
  size_t large_buffers_per_reactor = 512;    // max_io_size each
  std::vector<unsigned> io_reactors;   // reactors that get connections (default: all)
};

// A per-reactor slice of the target: buffer pools and the queue pairs living there.
struct ReactorSlice {
  std::unique_ptr<net::BufferPool> small;
  std::unique_ptr<net::BufferPool> large;
  std::vector<TcpQpair*> qpairs;
};

// Requests of every queue pair by state (TcpReq::State order: free, new, need_buffer, await_data,
// executing, await_admin, parked_aer, sending): how many are there now, and how many entered it so far.
struct TargetStats {
  uint64_t qpairs = 0;
  uint64_t commands = 0;
  std::array<uint64_t, TcpReq::kStateCount> in_state{};
  std::array<uint64_t, TcpReq::kStateCount> entered{};
};

struct ControllerInfo {
  uint16_t cntlid;
  std::string hostnqn;
  std::string hostid;
  uint32_t io_queues;
  uint32_t kato_ms;
  ListenAddr listener;  // the address its admin queue connected to (the path)
  uint64_t io_commands = 0, read_bytes = 0, write_bytes = 0;
};

struct SubsystemInfo {
  std::string nqn;
  std::string serial, model;
  bool allow_any_host;
  std::vector<std::string> hosts;
  std::vector<ListenAddr> listeners;
  struct Ns {
    uint32_t nsid;
    std::string bdev;
    std::string uuid;
    uint32_t anagrpid;
    uint64_t size_bytes;
    uint32_t block_size;
  };
  std::vector<Ns> namespaces;
  std::vector<ControllerInfo> controllers;
  std::vector<std::tuple<ListenAddr, uint32_t, nvme::AnaState>> ana;
};

class Target {
 public:
  Target(ReactorSet& reactors, BdevRegistry& devices, TargetOptions opts = {});
  ~Target();
  Target(const Target&) = delete;
  Target& operator=(const Target&) = delete;

  const TargetOptions& options() const { return opts_; }
  ReactorSet& reactors() { return reactors_; }
  BdevRegistry& devices() { return devices_; }

  // --- listeners: one socket per address:port, shared by the subsystems that list it ---
  Result<uint16_t> listen(const std::string& host, uint16_t port);  // port 0 picks a free one
  // Closes the listening socket and every connection it accepted.
  Task<Status> stop_listening(std::string host, uint16_t port);
  std::vector<ListenAddr> listeners() const;

  // --- subsystems ---
  Result<Subsystem*> create_subsystem(SubsystemConfig cfg);
  Task<Status> delete_subsystem(std::string nqn);
  Subsystem* find_subsystem(std::string_view nqn);
  Subsystem& discovery() { return *discovery_; }
  std::vector<SubsystemInfo> list_subsystems() const;

  Result<uint32_t> add_namespace(const std::string& nqn, const std::string& bdev, uint32_t nsid = 0,
                                 uint32_t anagrpid = 0);
  Task<Status> remove_namespace(std::string nqn, uint32_t nsid);
  // Re-reads the size of a namespace's device (grown underneath, e.g. a file extended); when it grew,
  // hosts get a Namespace Attribute Changed event. Returns the size in bytes.
  Result<uint64_t> rescan_namespace(const std::string& nqn, uint32_t nsid);
  Status add_host(const std::string& nqn, const std::string& hostnqn);
  Status remove_host(const std::string& nqn, const std::string& hostnqn);
  Status set_allow_any_host(const std::string& nqn, bool allow);
  Status add_subsystem_listener(const std::string& nqn, const ListenAddr& a);
  // Hides the subsystem on that address; controllers that connected through it are closed.
  Status remove_subsystem_listener(const std::string& nqn, const ListenAddr& a);
  Status set_ana_state(const std::string& nqn, const ListenAddr& l, uint32_t anagrpid, nvme::AnaState s);

  // Closes every connection and listener; waits for them. Devices stay open until namespaces go.
  Task<void> shutdown();

  // Serves a connection that arrived some other way than our listeners (a unit test's MemoryStream):
  // a queue pair on the calling reactor, which must be one of the target's. `local` is the address the
  // host reached (for ANA and the per-listener access rules).
  void adopt(std::unique_ptr<net::Stream> stream, const ListenAddr& local);

  // Request states summed over every queue pair (visits each reactor).
  Task<TargetStats> stats();

  // --- internal: used by controllers and queue pairs ---
  // A Connect command (primary reactor).
  ConnectResult connect(const nvme::ConnectCmd& cmd, const nvme::ConnectData& data, const ListenAddr& local,
                        const QpairRef& ref);
  // Reservation Register/Acquire/Release/Report for `ctrl` on subsystem `s` (primary reactor).
  // `xfer_len` is the command's data transfer length (its SGL).
  AdminResult reservation_command(Subsystem* s, Controller* ctrl, const nvme::Sqe& sqe, std::vector<uint8_t> data,
                                  uint32_t xfer_len);

  // --- reservations of hosts on this node that reach a namespace's device directly (a nexus's local
  // child): they take part in the namespace's reservations as a connected host with `hostid` would, so a
  // nexus elsewhere cannot keep writing the device over the network once a local nexus took it over
  // (primary reactor) ---
  // Runs a Reservation Register/Acquire/Release/Report on every namespace exposing device `bdev`; the
  // first one's answer is returned. kNoEnt when no namespace exposes the device.
  Result<AdminResult> local_reservation_command(const std::string& bdev, const std::array<uint8_t, 16>& hostid,
                                                const nvme::Sqe& sqe, const std::vector<uint8_t>& data,
                                                uint32_t xfer_len);
  // `fenced` runs (primary reactor) when another host removes `hostid`'s registration or takes its
  // reservation on a namespace exposing `bdev`. One per (bdev, hostid); an empty function removes it.
  void watch_local_reservation(const std::string& bdev, const std::array<uint8_t, 16>& hostid,
                               std::function<void()> fenced);

  // --- vendor-specific admin commands: the handler for `opcode` (C0h-FFh), primary reactor. An empty
  // function removes it; an opcode nobody handles is an Invalid Opcode. ---
  void set_vendor_handler(uint8_t opcode, VendorHandler h);
  // The handler, or null.
  const VendorHandler* vendor_handler(uint8_t opcode) const;

  ReactorSlice& slice(unsigned reactor) { return slices_[reactor]; }
  uint64_t discovery_genctr() const { return discovery_genctr_; }
  void bump_discovery_genctr();
  std::vector<Controller*>& all_controllers() { return controllers_; }
  void register_controller(Controller* c);
  void unregister_controller(Controller* c);
  // Tells every controller of `s` that namespace `nsid` changed (changed-namespace log + event).
  void namespace_changed(Subsystem& s, uint32_t nsid);
  void ana_changed(Subsystem& s);
  // Where the teardowns of queue pairs (one scope per reactor) and of controllers (the primary's) run;
  // shutdown waits for both.
  TaskScope& teardowns(unsigned reactor) { return qpair_teardowns_.on(reactor); }
  TaskScope& controller_teardowns() { return controller_teardowns_; }

 private:
  void on_accept(const ListenAddr& local, int fd);
  // Closes the connections accepted on `accepted_on` (every connection when null), on every reactor.
  Task<void> close_connections(const ListenAddr* accepted_on, const char* why);
  Status check_nqn(std::string_view nqn) const;

  ReactorSet& reactors_;
  BdevRegistry& devices_;
  TargetOptions opts_;
  std::vector<ReactorSlice> slices_;
  std::map<ListenAddr, std::unique_ptr<net::TcpListener>> listeners_;
  std::map<std::string, std::unique_ptr<Subsystem>, std::less<>> subsystems_;
  struct LocalResvWatch {
    std::string bdev;
    std::array<uint8_t, 16> hostid;
    std::function<void()> fenced;
  };
  std::vector<LocalResvWatch> local_resv_watches_;
  std::map<uint8_t, VendorHandler> vendor_handlers_;
  AdminResult reservation_command_as(Subsystem* s, Controller* ctrl, const std::array<uint8_t, 16>& me,
                                     const nvme::Sqe& sqe, std::vector<uint8_t> data, uint32_t xfer_len);
  std::unique_ptr<Subsystem> discovery_;
  std::vector<Controller*> controllers_;
  uint64_t discovery_genctr_ = 1;
  unsigned next_reactor_ = 0;
  std::atomic<uint64_t> qpair_ids_{0};  // any reactor takes one when it adopts a connection
  bool shutting_down_ = false;
  PerReactorScopes qpair_teardowns_;
  TaskScope controller_teardowns_{"nvmf controller teardown"};
};

// NQN syntax as the target accepts it (length, 'nqn.' prefix, no whitespace); the error names the NQN.
Status validate_nqn(std::string_view nqn);

const char* ana_state_name(nvme::AnaState s);
Result<nvme::AnaState> parse_ana_state(std::string_view s);

}  // namespace tern::nvmf
