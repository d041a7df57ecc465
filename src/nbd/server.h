// The NBD export server: shares any device of the registry over the NBD protocol (fixed newstyle
// negotiation, simple replies), on TCP and/or a unix socket.
//
// Threads (src/nbd/README.md and docs/design/nbd.md have the full picture):
//  - Server and its exports live on the primary reactor (0): Create, add_export, remove_export,
//    list_exports and stop run there (ReactorSet::run_sync(0, ...) from other threads). The listeners
//    accept on reactor 0.
//  - Each accepted connection is handed to a reactor (round robin over ServerOptions::io_reactors) and
//    lives there: handshake, request parsing, device I/O through that reactor's channel, replies. Only
//    option look-ups (which export is "x"?) hop to the primary and back.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bdev/registry.h"
#include "common/aligned_buffer.h"
#include "common/result.h"
#include "nbd/protocol.h"
#include "net/socket.h"
#include "reactor/task_scope.h"
#include "reactor/reactor_set.h"
#include "reactor/task_scope.h"

namespace tern::nbd {

class BufferSet;
class Connection;
struct Export;

struct ServerOptions {
  // TCP listener: off unless `tcp` is set. Port 0 picks a free port (read it back with tcp_port()).
  bool tcp = false;
  std::string tcp_host = "0.0.0.0";
  uint16_t tcp_port = 10809;  // the IANA port for NBD
  // Unix socket listener at this path; empty = none.
  std::string unix_path;

  // The maximum block size advertised: longer READ/WRITE requests close the connection. A multiple of
  // 4096 between 64 KiB and 32 MiB.
  uint32_t max_request_bytes = 32u << 20;
  // Requests one connection may have parsed and not yet answered; beyond it the server stops reading
  // from that connection until replies have gone out (TCP flow control holds the client).
  uint32_t max_inflight = 128;
  // Data buffers per reactor (allocated as needed, kept): 8 KiB, 128 KiB, and 1 MiB chunks (at least
  // max_request_bytes / 1 MiB of those, so the longest request can always be served).
  size_t small_buffers_per_reactor = 1024;
  size_t medium_buffers_per_reactor = 256;
  size_t chunk_buffers_per_reactor = 64;
  // A connection still negotiating after this long is closed (0: never). Clients negotiate in one or two
  // round trips; this only reaps connections that never do.
  uint64_t handshake_timeout_ms = 30'000;
  // remove_export() and stop(): clients get this long to finish what is in flight (replies sent) before
  // their connections are cut; requests still on a device after one more second are aborted by a reset.
  uint64_t drain_timeout_ms = 10'000;
  // Reactors that get connections (default: all).
  std::vector<unsigned> io_reactors;
};

struct ClientInfo {
  uint64_t id = 0;       // connection number, unique in this server
  std::string peer;      // "1.2.3.4:5678", "[::1]:5678" or "unix:/path"
  unsigned reactor = 0;
};

struct ExportCounters {
  uint64_t reads = 0, writes = 0, flushes = 0, trims = 0, write_zeroes = 0;
  uint64_t read_bytes = 0, write_bytes = 0;
  uint64_t errors = 0;  // requests answered with an error (refused ones included)
};

struct ExportInfo {
  std::string name;
  std::string bdev;
  bool read_only = false;
  uint64_t size_bytes = 0;
  uint32_t block_size = 0;
  std::vector<ClientInfo> clients;  // connections in the transmission phase on this export
  ExportCounters counters;          // since the export was added (clients gone included)
};

class Server {
 public:
  // Binds the listeners. Call on the primary reactor.
  static Result<std::unique_ptr<Server>> Create(ReactorSet& reactors, BdevRegistry& devices, ServerOptions opts);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  const ServerOptions& options() const { return opts_; }
  // The bound TCP port (0 without a TCP listener), and the unix socket path ("" without one).
  uint16_t tcp_port() const { return tcp_port_; }
  const std::string& unix_path() const { return opts_.unix_path; }

  // Exports device `bdev` as `name` (1..4096 bytes, no control characters), opening it writable unless
  // `read_only`. The same call again is a no-op; the same name with another device or read_only is
  // EEXIST naming the field that differs. A device that cannot be opened (unknown, claimed) fails here.
  Status add_export(const std::string& name, const std::string& bdev, bool read_only);
  // Disconnects the export's clients cleanly (they finish in-flight requests and get their replies,
  // within drain_timeout_ms), then closes the device. ENOENT if there is no such export. Clients that
  // ask for it from then on are told it does not exist.
  Task<Status> remove_export(std::string name);
  std::vector<ExportInfo> list_exports() const;
  // Closes the listeners and every connection (draining as remove_export does), then every export.
  // Idempotent; afterwards add_export fails with ESHUTDOWN.
  Task<void> stop();

 private:
  friend class Connection;
  struct Slice;
  // What a connection on another reactor learns from the primary when it answers an option.
  struct Lookup {
    proto::OptionLookup answer;
    Export* attached = nullptr;  // GO/EXPORT_NAME of a live export: the connection is now its client
    BdevDesc* desc = nullptr;
    proto::Geometry geometry;
    bool write_cache = false;
    bool can_flush = false;
    bool can_unmap = false;
    bool can_write_zeroes = false;
  };
  static constexpr uint32_t kZeroBufferBytes = 1u << 20;

  Server(ReactorSet& reactors, BdevRegistry& devices, ServerOptions opts);
  // For connections.
  ReactorSet& reactors() { return reactors_; }
  Slice& slice(unsigned reactor) { return *slices_[reactor]; }
  const uint8_t* zeroes() const { return zeroes_.data(); }
  Lookup lookup(const proto::OptionPlan& plan, uint32_t opt, Connection* conn);  // primary
  void detach(Export* e, Connection* c);  // primary: forget a client, keep its counters
  void connection_closed(Connection* c);  // the connection's reactor: forget it, delete it

  void on_accept(int fd, std::string peer);
  proto::ExportDesc describe(const Export& e) const;
  Task<void> removal_on_device_event(std::string name);
  Task<size_t> connections_left();

  ReactorSet& reactors_;
  BdevRegistry& devices_;
  ServerOptions opts_;
  std::vector<std::unique_ptr<Slice>> slices_;
  std::unique_ptr<net::TcpListener> tcp_;
  std::unique_ptr<net::TcpListener> unix_;
  uint16_t tcp_port_ = 0;
  std::map<std::string, std::unique_ptr<Export>, std::less<>> exports_;
  AlignedBuffer zeroes_;
  unsigned next_reactor_ = 0;
  uint64_t next_conn_id_ = 0;
  int removals_ = 0;  // remove_export calls running (device events included)
  TaskScope tasks_{"nbd server"};  // removals started by device events (primary reactor)
  bool stopping_ = false;
  bool stopped_ = false;
};

}  // namespace tern::nbd
