#include "nbd/server.h"

#include <unistd.h>

#include <algorithm>

#include "common/clock.h"
#include "common/log.h"
#include "nbd/buffers.h"
#include "nbd/connection.h"
#include "nbd/export.h"

namespace tern::nbd {

using namespace proto;

namespace {

constexpr uint64_t kMs = 1'000'000;
// Once the drain timeout has passed, connections are cut; requests still on a device are then aborted
// after this long, and a remove/stop gives up (with an error) after kGiveUpNs more.
constexpr uint64_t kAbortAfterNs = 1'000 * kMs;
constexpr uint64_t kGiveUpNs = 30'000 * kMs;

Status check_options(ServerOptions& o, unsigned reactors) {
  if (o.max_request_bytes % 4096 != 0 || o.max_request_bytes < (64u << 10) ||
      o.max_request_bytes > uint64_t(BufferSet::kMaxChunks) * BufferSet::kChunk) {
    return Status::Errorf(Errc::kInval, "max_request_bytes {} must be a multiple of 4096 from 64 KiB to {} MiB",
                          o.max_request_bytes, BufferSet::kMaxChunks);
  }
  if (o.max_inflight == 0 || o.max_inflight > 4096) {
    return Status::Errorf(Errc::kInval, "max_inflight {} must be 1 to 4096", o.max_inflight);
  }
  const size_t chunks = (o.max_request_bytes + BufferSet::kChunk - 1) / BufferSet::kChunk;
  if (o.chunk_buffers_per_reactor < chunks || o.small_buffers_per_reactor == 0 || o.medium_buffers_per_reactor == 0) {
    return Status::Errorf(Errc::kInval,
                          "buffers per reactor: small and medium must be at least 1, chunks at least {} (the longest "
                          "request, max_request_bytes {}, takes that many)",
                          chunks, o.max_request_bytes);
  }
  if (o.io_reactors.empty()) {
    for (unsigned i = 0; i < reactors; ++i) o.io_reactors.push_back(i);
  }
  for (unsigned r : o.io_reactors) {
    if (r >= reactors) return Status::Errorf(Errc::kInval, "io_reactors: there is no reactor {}", r);
  }
  return Status::Ok();
}

Status check_export_name(const std::string& name) {
  if (name.empty()) return Status(Errc::kInval, "an export name must not be empty");
  if (name.size() > kMaxNameLen) {
    return Status::Errorf(Errc::kInval, "export name of {} bytes is longer than {}", name.size(), kMaxNameLen);
  }
  for (char c : name) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return Status::Errorf(Errc::kInval, "export name '{}' contains control characters", name);
    }
  }
  return Status::Ok();
}

void add(ExportCounters& a, const ExportCounters& b) {
  a.reads += b.reads;
  a.writes += b.writes;
  a.flushes += b.flushes;
  a.trims += b.trims;
  a.write_zeroes += b.write_zeroes;
  a.read_bytes += b.read_bytes;
  a.write_bytes += b.write_bytes;
  a.errors += b.errors;
}

// Closes a listener that is not wanted after all (a later step of Create failed); it deletes itself once
// its accept is out of the ring.
void discard_listener(std::unique_ptr<net::TcpListener> l) {
  if (!l) return;
  net::TcpListener* raw = l.release();
  raw->close([raw] { delete raw; });
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Life cycle

Server::Server(ReactorSet& reactors, BdevRegistry& devices, ServerOptions opts)
    : reactors_(reactors), devices_(devices), opts_(std::move(opts)), zeroes_(kZeroBufferBytes, 4096, true) {
  for (unsigned i = 0; i < reactors_.size(); ++i) {
    auto s = std::make_unique<Slice>();
    s->buffers = std::make_unique<BufferSet>(opts_.small_buffers_per_reactor, opts_.medium_buffers_per_reactor,
                                             opts_.chunk_buffers_per_reactor);
    slices_.push_back(std::move(s));
  }
}

Result<std::unique_ptr<Server>> Server::Create(ReactorSet& reactors, BdevRegistry& devices, ServerOptions opts) {
  Reactor* cur = Reactor::current();
  if (!cur || &cur->set() != &reactors || cur->id() != 0) {
    return Status(Errc::kInval, "nbd::Server::Create must run on the primary reactor");
  }
  TERN_RETURN_IF_ERROR(check_options(opts, reactors.size()));
  std::unique_ptr<Server> s(new Server(reactors, devices, std::move(opts)));
  Server* srv = s.get();
  if (srv->opts_.tcp) {
    auto l = net::TcpListener::Listen(srv->opts_.tcp_host, srv->opts_.tcp_port, [srv](int fd, const sockaddr_storage& peer) {
      srv->on_accept(fd, net::format_sockaddr(peer));
    });
    if (!l.ok()) return l.status().WithContext("NBD server");
    srv->tcp_ = std::move(*l);
    srv->tcp_port_ = srv->tcp_->port();
    TLOG_INFO("nbd", "listening on {}:{}", srv->opts_.tcp_host, srv->tcp_port_);
  }
  if (!srv->opts_.unix_path.empty()) {
    auto l = net::TcpListener::ListenUnix(srv->opts_.unix_path, [srv](int fd, const sockaddr_storage&) {
      srv->on_accept(fd, "unix:" + srv->opts_.unix_path);
    });
    if (!l.ok()) {
      discard_listener(std::move(srv->tcp_));
      return l.status().WithContext("NBD server");
    }
    srv->unix_ = std::move(*l);
    TLOG_INFO("nbd", "listening on unix:{}", srv->opts_.unix_path);
  }
  return s;
}

Server::~Server() {
  if (!stopped_ && (tcp_ || unix_ || !exports_.empty())) {
    TLOG_WARN("nbd", "NBD server destroyed with {} export(s) and its listeners open; call stop() first", exports_.size());
  }
}

void Server::on_accept(int fd, std::string peer) {
  if (stopping_) {
    ::close(fd);
    return;
  }
  const unsigned r = opts_.io_reactors[next_reactor_++ % opts_.io_reactors.size()];
  const uint64_t id = ++next_conn_id_;
  TLOG_DEBUG("nbd", "connection {} from {} goes to reactor {}", id, peer, r);
  reactors_.post(r, [this, fd, id, r, peer = std::move(peer)]() mutable {
    auto* c = new Connection(*this, fd, id, std::move(peer));
    slices_[r]->conns.push_back(c);
    c->start();
  });
}

void Server::connection_closed(Connection* c) {
  auto& v = slices_[c->reactor()]->conns;
  v.erase(std::remove(v.begin(), v.end(), c), v.end());
  // Deleted from the loop, outside any of the connection's own call frames.
  reactors_.post(c->reactor(), [c] { delete c; });
}

void Server::detach(Export* e, Connection* c) {
  auto& v = e->clients;
  v.erase(std::remove(v.begin(), v.end(), c), v.end());
  add(e->retired, c->counters().snapshot());
  Server* self = this;
  reactors_.post(c->reactor(), [self, c] { self->connection_closed(c); });
}

Task<size_t> Server::connections_left() {
  size_t n = 0;
  for (unsigned r = 0; r < reactors_.size(); ++r) {
    n += co_await reactors_.submit_to(r, [this, r] { return slices_[r]->conns.size(); });
  }
  co_return n;
}

Task<void> Server::stop() {
  if (stopped_) co_return;
  if (stopping_) {
    // Another stop() is under way: it is bounded, so this wait is.
    while (!stopped_) co_await Reactor::sleep_for(kMs);
    co_return;
  }
  stopping_ = true;
  for (net::TcpListener* l : {tcp_.get(), unix_.get()}) {
    if (!l) continue;
    bool done = false;
    l->close([&done] { done = true; });
    while (!done) co_await Reactor::sleep_for(kMs);
  }
  tcp_.reset();
  unix_.reset();
  for (unsigned r = 0; r < reactors_.size(); ++r) {
    co_await reactors_.submit_to(r, [this, r] {
      std::vector<Connection*> cs = slices_[r]->conns;
      for (Connection* c : cs) c->shutdown("the NBD server is stopping");
    });
  }
  const uint64_t start = now_ns();
  const uint64_t drain_ns = opts_.drain_timeout_ms * kMs;
  bool aborted = false;
  for (;;) {
    size_t left = co_await connections_left();
    if (left == 0) break;
    const uint64_t waited = now_ns() - start;
    if (!aborted && waited > drain_ns + kAbortAfterNs) {
      // Connections were cut at the drain timeout; what still holds them is requests a device keeps.
      aborted = true;
      TLOG_WARN("nbd", "stopping: {} connection(s) still wait for their devices; resetting them", left);
      for (unsigned r = 0; r < reactors_.size(); ++r) {
        co_await reactors_.submit_to(r, [this, r] {
          for (Connection* c : slices_[r]->conns) c->abort_device_io();
        });
      }
    }
    if (waited > drain_ns + kAbortAfterNs + kGiveUpNs) {
      TLOG_ERROR("nbd", "stopping: {} connection(s) did not close; their exports stay open", left);
      break;
    }
    co_await Reactor::sleep_for(5 * kMs);
  }
  // remove_export calls in flight (device removal events among them) hold pointers to their exports.
  co_await tasks_.close();
  for (int i = 0; removals_ > 0 && i < 60'000; ++i) co_await Reactor::sleep_for(kMs);
  // Connections that closed are gone only once their teardown has ended.
  for (unsigned r = 0; r < reactors_.size(); ++r) {
    TaskScope* t = &slices_[r]->teardowns;
    co_await reactors_.submit_to(r, [t]() -> Task<void> { co_await t->idle(); });
  }
  for (auto& [n, e] : exports_) {
    // Still referenced by a connection (or a removal) that never finished: leaked rather than closed
    // under it. Only a device that ignores resets gets here.
    if (!e->clients.empty() || removals_ > 0) (void)e.release();
  }
  exports_.clear();
  stopped_ = true;
  TLOG_INFO("nbd", "NBD server stopped");
}

// ---------------------------------------------------------------------------------------------------
// Exports

Status Server::add_export(const std::string& name, const std::string& bdev, bool read_only) {
  if (stopping_) return Status(Errc::kShutdown, "the NBD server is stopping");
  TERN_RETURN_IF_ERROR(check_export_name(name));
  if (auto it = exports_.find(name); it != exports_.end()) {
    const Export& e = *it->second;
    if (e.removing) return Status::Errorf(Errc::kBusy, "NBD export '{}' is being removed", name);
    if (devices_.find(bdev) != &e.desc->bdev()) {
      return Status::Errorf(Errc::kExist, "NBD export '{}' already exists with device '{}' (asked for device '{}')",
                            name, e.bdev, bdev);
    }
    if (e.read_only != read_only) {
      return Status::Errorf(Errc::kExist, "NBD export '{}' already exists with read_only={} (asked for read_only={})",
                            name, e.read_only, read_only);
    }
    return Status::Ok();
  }
  auto desc = devices_.open(bdev, !read_only, [this, name](BdevEvent ev) {
    // The device is being destroyed with force: let its clients go and close it.
    if (ev == BdevEvent::kRemove) tasks_.spawn(removal_on_device_event(name));
  });
  if (!desc.ok()) return desc.status().WithContext(fmt::format("NBD export '{}'", name));
  auto e = std::make_unique<Export>();
  e->name = name;
  e->bdev = (*desc)->bdev().name();
  e->read_only = read_only;
  e->desc = std::move(*desc);
  const BdevProps& p = e->desc->bdev().props();
  TLOG_INFO("nbd", "export '{}': device '{}' ({} bytes, {}-byte blocks{})", name, e->bdev, p.size_bytes(), p.block_size,
            read_only ? ", read-only" : "");
  exports_.emplace(name, std::move(e));
  return Status::Ok();
}

Task<void> Server::removal_on_device_event(std::string name) {
  TLOG_INFO("nbd", "export '{}': its device is being removed", name);
  Status s = co_await remove_export(name);
  if (!s.ok() && s.code() != Errc::kNoEnt) TLOG_WARN("nbd", "export '{}': {}", name, s.ToString());
}

Task<Status> Server::remove_export(std::string name) {
  auto it = exports_.find(name);
  if (it == exports_.end()) co_return Status::Errorf(Errc::kNoEnt, "no NBD export '{}'", name);
  Export* e = it->second.get();
  const uint64_t drain_ns = opts_.drain_timeout_ms * kMs;
  if (e->removing) {
    // Another removal is under way; done when it is (it is bounded, and so is this wait).
    const uint64_t start = now_ns();
    while (exports_.count(name) && now_ns() - start < drain_ns + kAbortAfterNs + kGiveUpNs + 1000 * kMs) {
      co_await Reactor::sleep_for(kMs);
    }
    co_return Status::Ok();
  }
  e->removing = true;
  ++removals_;
  // Each client finishes what it has in flight, answers it, and closes. A connection in e->clients is
  // alive until its detach runs here, after these messages reach its reactor.
  for (Connection* c : e->clients) {
    reactors_.post(c->reactor(), [c] { c->shutdown("the export was removed"); });
  }
  const uint64_t start = now_ns();
  bool aborted = false;
  while (!e->clients.empty()) {
    const uint64_t waited = now_ns() - start;
    if (!aborted && waited > drain_ns + kAbortAfterNs) {
      aborted = true;
      TLOG_WARN("nbd", "export '{}': {} client(s) still wait for the device; resetting it", name, e->clients.size());
      for (Connection* c : e->clients) reactors_.post(c->reactor(), [c] { c->abort_device_io(); });
    }
    if (waited > drain_ns + kAbortAfterNs + kGiveUpNs) {
      --removals_;
      co_return Status::Errorf(Errc::kTimedOut, "NBD export '{}': {} client(s) did not go away; it stays", name,
                               e->clients.size());
    }
    co_await Reactor::sleep_for(kMs);
  }
  exports_.erase(name);  // closes the device
  --removals_;
  TLOG_INFO("nbd", "export '{}' removed", name);
  co_return Status::Ok();
}

ExportDesc Server::describe(const Export& e) const {
  const Bdev& b = e.desc->bdev();
  const BdevProps& p = b.props();
  ExportDesc d;
  d.name = e.name;
  d.description = fmt::format("tern device {}", e.bdev);
  d.size = b.num_blocks() * p.block_size;
  // MULTI_CONN: every connection reaches the same device, and a flush flushes the device, so a flush on
  // one connection covers writes answered on all of them.
  d.tx_flags = kTxHasFlags | kTxSendFlush | kTxSendFua | kTxCanMultiConn;
  if (e.read_only) {
    d.tx_flags |= kTxReadOnly;
  } else {
    d.tx_flags |= kTxSendWriteZeroes;
    if (b.supports(IoType::kUnmap)) d.tx_flags |= kTxSendTrim;
  }
  d.min_block = p.block_size;
  d.preferred_block = std::max<uint32_t>(4096, p.block_size);
  d.max_block = opts_.max_request_bytes / p.block_size * p.block_size;
  return d;
}

Server::Lookup Server::lookup(const OptionPlan& plan, uint32_t opt, Connection* conn) {
  Lookup res;
  if (stopping_) return res;
  if (plan.need == OptionPlan::Need::kList) {
    for (auto& [n, e] : exports_) {
      if (!e->removing) res.answer.names.push_back(n);
    }
    return res;
  }
  auto it = exports_.find(plan.name);
  if (it == exports_.end() || it->second->removing) return res;
  Export& e = *it->second;
  res.answer.found = true;
  res.answer.desc = describe(e);
  if (opt != kOptGo && opt != kOptExportName) return res;
  // Entering the transmission phase: the connection becomes a client of the export until it detaches.
  e.clients.push_back(conn);
  const Bdev& b = e.desc->bdev();
  res.attached = &e;
  res.desc = e.desc.get();
  res.geometry.size = res.answer.desc.size;
  res.geometry.block_size = b.props().block_size;
  res.geometry.max_payload = res.answer.desc.max_block;
  res.geometry.read_only = e.read_only;
  res.write_cache = b.props().write_cache;
  res.can_flush = b.supports(IoType::kFlush);
  res.can_unmap = b.supports(IoType::kUnmap);
  res.can_write_zeroes = b.supports(IoType::kWriteZeroes);
  return res;
}

std::vector<ExportInfo> Server::list_exports() const {
  std::vector<ExportInfo> out;
  for (auto& [n, e] : exports_) {
    ExportInfo i;
    i.name = n;
    i.bdev = e->bdev;
    i.read_only = e->read_only;
    i.size_bytes = e->desc->bdev().num_blocks() * e->desc->bdev().props().block_size;
    i.block_size = e->desc->bdev().props().block_size;
    i.counters = e->retired;
    for (Connection* c : e->clients) {
      i.clients.push_back({c->id(), c->peer(), c->reactor()});
      add(i.counters, c->counters().snapshot());
    }
    out.push_back(std::move(i));
  }
  return out;
}

}  // namespace tern::nbd
