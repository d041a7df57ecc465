// MemoryStream: a Stream (stream.h) over memory, for driving a protocol session byte by byte in tests:
// the test feeds what the peer sends and reads what the session sent, with no socket and no file
// descriptor, on a real reactor (the loop delivers bytes and completes sends, as a socket would).
//
//   auto* s = new MemoryStream();           // on the reactor the session will live on
//   session.adopt(std::unique_ptr<Stream>(s));
//   s->feed(icreq, sizeof icreq);           // delivered to on_data from the loop
//   ... co_await Reactor::yield() ...
//   std::string out = s->take_sent();       // PDUs the session sent
//
// Threads: everything runs on the reactor that created it. The test side (feed, take_sent, ...) is
// called there too (ReactorSet::run_sync / submit_to).
#pragma once

#include <string>

#include "net/stream.h"
#include "reactor/reactor.h"

namespace tern::net {

class MemoryStream final : public Stream {
 public:
  explicit MemoryStream(std::string peer = "memory");
  ~MemoryStream() override;
  MemoryStream(const MemoryStream&) = delete;
  MemoryStream& operator=(const MemoryStream&) = delete;

  // --- Stream ---
  void set_callbacks(Callbacks cb) override { cb_ = std::move(cb); }
  void start() override;
  void recv_into(const iovec* iov, int iovcnt, size_t len, SmallFunction<void(Errc)> done) override;
  void resume() override;
  void send(SendItem* item) override;
  void close(SmallFunction<void()> on_closed) override;
  bool closing() const override { return closing_; }
  const std::string& peer() const override { return peer_; }

  // --- the test's side ---
  // Bytes from the peer, delivered from the loop.
  void feed(const void* data, size_t len);
  void feed(const std::string& bytes) { feed(bytes.data(), bytes.size()); }
  // The peer closed its side: the session's on_error(kConnReset) runs from the loop.
  void feed_eof();
  // What the session has sent so far (and forgets it).
  std::string take_sent();
  const std::string& sent() const { return out_; }
  // While held, queued items do not complete (a peer that does not read); release lets them go.
  void hold_sends(bool hold);
  size_t queued_items() const;
  // Bytes fed and not yet consumed by the session.
  size_t unread() const { return in_.size() - head_; }
  bool closed() const { return closed_; }

 private:
  void schedule();
  void pump();
  void deliver_input();
  void complete_sends(Errc e);

  Reactor& reactor_;
  std::string peer_;
  Callbacks cb_;
  bool started_ = false;
  std::string in_;
  size_t head_ = 0;
  std::string out_;
  SendItem* sq_head_ = nullptr;
  SendItem* sq_tail_ = nullptr;
  bool hold_sends_ = false;
  // Direct receive.
  bool direct_ = false;
  iovec direct_iov_[16];
  int direct_iovcnt_ = 0;
  size_t direct_left_ = 0;
  SmallFunction<void(Errc)> direct_done_;
  bool eof_ = false;
  bool error_reported_ = false;
  bool closing_ = false;
  bool closed_ = false;
  SmallFunction<void()> on_closed_;
  bool scheduled_ = false;
  OwnedDeferred<MemoryStream> pump_;
};

}  // namespace tern::net
