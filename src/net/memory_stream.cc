#include "net/memory_stream.h"

#include <algorithm>
#include <cstring>

#include "common/check.h"

namespace tern::net {

MemoryStream::MemoryStream(std::string peer) : reactor_(*Reactor::current()), peer_(std::move(peer)) {
  pump_.owner = this;
  pump_.run = [](Deferred* d) { static_cast<OwnedDeferred<MemoryStream>*>(d)->owner->pump(); };
}

MemoryStream::~MemoryStream() {
  TERN_CHECK(!scheduled_, "memory stream '{}' destroyed with work queued on its reactor", peer_);
}

void MemoryStream::schedule() {
  if (scheduled_ || closed_) return;
  scheduled_ = true;
  reactor_.defer(&pump_);
}

void MemoryStream::start() {
  started_ = true;
  schedule();
}

void MemoryStream::feed(const void* data, size_t len) {
  in_.append(static_cast<const char*>(data), len);
  schedule();
}

void MemoryStream::feed_eof() {
  eof_ = true;
  schedule();
}

std::string MemoryStream::take_sent() {
  std::string s;
  s.swap(out_);
  return s;
}

void MemoryStream::hold_sends(bool hold) {
  hold_sends_ = hold;
  schedule();
}

size_t MemoryStream::queued_items() const {
  size_t n = 0;
  for (SendItem* i = sq_head_; i; i = i->next) ++n;
  return n;
}

void MemoryStream::recv_into(const iovec* iov, int iovcnt, size_t len, SmallFunction<void(Errc)> done) {
  TERN_CHECK(!direct_ && iovcnt > 0 && iovcnt <= 16, "memory stream: bad direct receive ({} entries)", iovcnt);
  direct_ = true;
  std::copy(iov, iov + iovcnt, direct_iov_);
  direct_iovcnt_ = iovcnt;
  direct_left_ = len;
  direct_done_ = std::move(done);
  schedule();
}

void MemoryStream::resume() { schedule(); }

void MemoryStream::send(SendItem* item) {
  item->next = nullptr;
  if (sq_tail_) sq_tail_->next = item; else sq_head_ = item;
  sq_tail_ = item;
  schedule();
}

void MemoryStream::close(SmallFunction<void()> on_closed) {
  if (closing_) return;
  closing_ = true;
  on_closed_ = std::move(on_closed);
  schedule();
}

void MemoryStream::complete_sends(Errc e) {
  while (SendItem* it = sq_head_) {
    sq_head_ = it->next;
    if (!sq_head_) sq_tail_ = nullptr;
    if (e == Errc::kOk) {
      for (int i = 0; i < it->iovcnt; ++i) out_.append(static_cast<const char*>(it->iov[i].iov_base), it->iov[i].iov_len);
    }
    it->done(it, e);
  }
}

void MemoryStream::deliver_input() {
  for (;;) {
    if (direct_) {
      // Fill the direct iovec from what was fed.
      size_t skip = 0;  // bytes of the iovec already filled
      size_t total = 0;
      for (int i = 0; i < direct_iovcnt_; ++i) total += direct_iov_[i].iov_len;
      skip = total - direct_left_;
      size_t avail = in_.size() - head_;
      size_t n = std::min(avail, direct_left_);
      size_t at = 0;
      for (int i = 0; i < direct_iovcnt_ && at < n; ++i) {
        size_t len = direct_iov_[i].iov_len;
        if (skip >= len) {
          skip -= len;
          continue;
        }
        size_t take = std::min(len - skip, n - at);
        std::memcpy(static_cast<char*>(direct_iov_[i].iov_base) + skip, in_.data() + head_ + at, take);
        at += take;
        skip = 0;
      }
      head_ += n;
      direct_left_ -= n;
      if (direct_left_ > 0) return;
      direct_ = false;
      auto done = std::move(direct_done_);
      done(Errc::kOk);
      if (closing_) return;
      continue;
    }
    if (head_ == in_.size() || !cb_.on_data) return;
    size_t n = cb_.on_data(reinterpret_cast<const uint8_t*>(in_.data()) + head_, in_.size() - head_);
    head_ += n;
    if (n == 0 || closing_) return;
  }
}

void MemoryStream::pump() {
  scheduled_ = false;
  if (closed_) return;
  if (closing_) {
    complete_sends(Errc::kShutdown);
    if (direct_) {
      direct_ = false;
      auto done = std::move(direct_done_);
      done(Errc::kShutdown);
    }
    closed_ = true;
    auto cb = std::move(on_closed_);
    if (cb) cb();  // may destroy this stream: nothing after it
    return;
  }
  if (!hold_sends_) complete_sends(Errc::kOk);
  if (!started_ || closing_) return;
  deliver_input();
  if (head_ > 0 && head_ == in_.size()) {
    in_.clear();
    head_ = 0;
  }
  if (eof_ && !error_reported_ && !closing_ && !direct_) {
    error_reported_ = true;
    if (cb_.on_error) cb_.on_error(Errc::kConnReset);
  }
  // Sends queued while delivering go out in the next turn, as a socket's would.
  if (!closing_ && sq_head_ && !hold_sends_) schedule();
  if (closing_) schedule();
}

}  // namespace tern::net
