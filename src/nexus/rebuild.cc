#include "nexus/rebuild.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include <nlohmann/json.hpp>

#include "common/aligned_buffer.h"
#include "common/clock.h"
#include "common/log.h"
#include "nexus/nexus.h"
#include "nexus/nexus_internal.h"
#include "reactor/reactor.h"
#include "reactor/task_scope.h"

namespace tern::nexus {

const char* rebuild_state_name(RebuildState s) {
  switch (s) {
    case RebuildState::kRunning: return "running";
    case RebuildState::kPaused: return "paused";
    case RebuildState::kStopped: return "stopped";
    case RebuildState::kCompleted: return "completed";
    case RebuildState::kFailed: return "failed";
  }
  return "?";
}

const char* rebuild_kind_name(RebuildKind k) { return k == RebuildKind::kFull ? "full" : "partial"; }

std::string RebuildHistoryToJson(const std::vector<RebuildStats>& h) {
  nlohmann::json a = nlohmann::json::array();
  for (const RebuildStats& s : h) {
    a.push_back({{"child", s.child.ToString()}, {"uri", s.uri}, {"source", s.source},
                 {"kind", rebuild_kind_name(s.kind)}, {"state", rebuild_state_name(s.state)}, {"reason", s.reason},
                 {"error", s.error}, {"total_bytes", s.total_bytes}, {"done_bytes", s.done_bytes},
                 {"copied_bytes", s.copied_bytes}, {"skipped_bytes", s.skipped_bytes},
                 {"resumed_bytes", s.resumed_bytes}, {"dirty_bytes", s.dirty_bytes},
                 {"verified_bytes", s.verified_bytes}, {"verify", s.verify},
                 {"source_errors", s.source_errors},
                 {"started_ns", s.started_wall_ns}, {"ended_ns", s.ended_wall_ns}, {"elapsed_ns", s.elapsed_ns},
                 {"segment_bytes", s.segment_bytes}, {"concurrency", s.concurrency}});
  }
  return a.dump();
}

Result<std::vector<RebuildStats>> RebuildHistoryFromJson(std::string_view text) {
  using nlohmann::json;
  json a = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (a.is_discarded() || !a.is_array()) return Status(Errc::kInval, "rebuild history: not a JSON array");
  std::vector<RebuildStats> out;
  for (size_t i = 0; i < a.size(); ++i) {
    const json& e = a[i];
    if (!e.is_object()) return Status::Errorf(Errc::kInval, "rebuild history: [{}] is not an object", i);
    RebuildStats s;
    auto str = [&](const char* k) -> std::string {
      auto it = e.find(k);
      return it != e.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    auto num = [&](const char* k) -> uint64_t {
      auto it = e.find(k);
      return it != e.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
    };
    auto child = Uuid::Parse(str("child"));
    if (!child.ok()) return Status::Errorf(Errc::kInval, "rebuild history: [{}].child: {}", i, child.status().message());
    s.child = *child;
    s.uri = str("uri");
    s.source = str("source");
    s.kind = str("kind") == "partial" ? RebuildKind::kPartial : RebuildKind::kFull;
    const std::string st = str("state");
    if (st == "completed") s.state = RebuildState::kCompleted;
    else if (st == "stopped") s.state = RebuildState::kStopped;
    else if (st == "failed") s.state = RebuildState::kFailed;
    else return Status::Errorf(Errc::kInval, "rebuild history: [{}].state '{}' is not an ended state", i, st);
    s.reason = str("reason");
    s.error = str("error");
    s.total_bytes = num("total_bytes");
    s.done_bytes = num("done_bytes");
    s.copied_bytes = num("copied_bytes");
    s.skipped_bytes = num("skipped_bytes");
    s.resumed_bytes = num("resumed_bytes");
    s.dirty_bytes = num("dirty_bytes");
    s.verified_bytes = num("verified_bytes");
    if (auto it = e.find("verify"); it != e.end() && it->is_boolean()) s.verify = it->get<bool>();
    s.source_errors = num("source_errors");
    s.started_wall_ns = num("started_ns");
    s.ended_wall_ns = num("ended_ns");
    s.elapsed_ns = num("elapsed_ns");
    s.segment_bytes = uint32_t(num("segment_bytes"));
    s.concurrency = uint32_t(num("concurrency"));
    if (s.elapsed_ns > 0) s.bytes_per_s = uint64_t(double(s.done_bytes - s.resumed_bytes) * 1e9 / double(s.elapsed_ns));
    out.push_back(std::move(s));
  }
  return out;
}

Status RebuildOptions::Validate(uint32_t block_size) const {
  if (segment_bytes < 4096 || segment_bytes > (16u << 20) || segment_bytes % block_size != 0 ||
      segment_bytes % 4096 != 0) {
    return Status::Errorf(Errc::kInval, "rebuild segment: {} bytes; it must be a multiple of 4 KiB from 4 KiB to 16 MiB",
                          segment_bytes);
  }
  if (concurrency < 1 || concurrency > 16) {
    return Status::Errorf(Errc::kInval, "rebuild concurrency: {}; it must be 1 to 16", concurrency);
  }
  if (lock_timeout_ns == 0) return Status(Errc::kInval, "rebuild lock timeout: must be more than 0");
  if (checkpoint_bytes == 0) return Status(Errc::kInval, "rebuild checkpoint interval: must be more than 0");
  return Status::Ok();
}

RebuildJob::RebuildJob(Nexus& nx, Uuid child, uint64_t incarnation, RebuildOptions opts, std::string reason,
                       uint64_t start_bytes, uint64_t token, std::shared_ptr<const Dirty> dirty)
    : nx_(nx),
      child_(child),
      incarnation_(incarnation),
      opts_(opts),
      token_(token),
      checkpointed_(start_bytes),
      dirty_(std::move(dirty)) {
  if (dirty_) {
    stats_.kind = RebuildKind::kPartial;
    uint64_t n = 0;
    for (uint64_t w : dirty_->bits) n += uint64_t(__builtin_popcountll(w));
    stats_.dirty_bytes = std::min(n << dirty_->region_shift, nx.layout().volume_bytes);
  }
  stats_.done_bytes = stats_.resumed_bytes = start_bytes;
  stats_.child = child;
  stats_.reason = std::move(reason);
  stats_.total_bytes = nx.layout().volume_bytes;
  stats_.rate_limit = opts.rate_bytes_per_s;
  stats_.segment_bytes = uint32_t(opts.segment_bytes);
  stats_.verify = opts.verify;
  stats_.concurrency = opts.concurrency;
  stats_.started_wall_ns = wall_clock_ns();
  run_started_ns_ = now_ns();
}

void RebuildJob::account_running() {
  if (stats_.state == RebuildState::kRunning) {
    const uint64_t t = now_ns();
    ran_ns_ += t - run_started_ns_;
    run_started_ns_ = t;
  }
}

void RebuildJob::pause() {
  if (finished() || pause_) return;
  pause_ = true;
}

void RebuildJob::resume() {
  if (finished()) return;
  pause_ = false;
}

void RebuildJob::stop(std::string why) {
  if (finished() || stop_) return;
  stop_ = true;
  stats_.error = std::move(why);
}

RebuildStats RebuildJob::stats() const {
  RebuildStats s = stats_;
  s.elapsed_ns = ran_ns_ + (s.state == RebuildState::kRunning && !ended_ ? now_ns() - run_started_ns_ : 0);
  if (s.elapsed_ns > 0) s.bytes_per_s = uint64_t(double(s.done_bytes - s.resumed_bytes) * 1e9 / double(s.elapsed_ns));
  if (!s.finished() && s.bytes_per_s > 0) {
    s.eta_ns = uint64_t(double(s.total_bytes - s.done_bytes) * 1e9 / double(s.bytes_per_s));
  }
  return s;
}

Task<void> RebuildJob::wait() {
  while (!ended_) co_await Reactor::sleep_for(1'000'000);
}

void RebuildJob::finish(RebuildState s, std::string error) {
  account_running();
  stats_.state = s;
  if (!error.empty()) stats_.error = std::move(error);
  stats_.ended_wall_ns = wall_clock_ns();
}

template <typename Child>
Task<RebuildJob::Allocation> RebuildJob::allocation(Child& c, uint64_t lba, uint64_t blocks) {
  if (no_status_ & (1u << c.slot)) co_return Allocation::kUnknown;
  std::optional<Result<Bdev::BlockStatus>> got;
  {
    Nexus::Child::Pin pin(c);
    got.emplace(co_await c.desc->bdev().block_status(lba, blocks));
  }
  const Result<Bdev::BlockStatus>& st = *got;
  if (!st.ok()) {
    if (st.code() == Errc::kNotSup) no_status_ |= 1u << c.slot;  // not asked again
    co_return Allocation::kUnknown;
  }
  if (!st->allocated && st->blocks >= blocks) co_return Allocation::kUnallocated;
  co_return Allocation::kAllocated;
}

Task<RebuildJob::SegmentResult> RebuildJob::copy_segment(uint64_t lba, uint64_t blocks, uint8_t* buf) {
  // Read from an in-sync child; one that fails is not asked again during this job. Thin sources: a
  // segment the source never wrote reads as zeros there, so it is not read, and the destination needs
  // only to read as zeros too (asked under the window's lock: no host write can change either meanwhile).
  bool zeros = false;
  for (;;) {
    Nexus::Child* src = nx_.rebuild_source(child_, bad_sources_);
    if (!src) co_return SegmentResult{SegmentError::kNoSource, Status(Errc::kNoDev, "no in-sync child is left to copy from")};
    zeros = co_await allocation(*src, lba, blocks) == Allocation::kUnallocated;
    Errc e = Errc::kOk;
    if (!zeros) e = co_await src->io(IoType::kRead, buf, lba, blocks);  // (not `c ? co_await x : y`: GCC 12)
    if (e == Errc::kOk) {
      stats_.source = src->uri;
      break;
    }
    ++stats_.source_errors;
    bad_sources_ |= 1u << src->slot;
    TLOG_WARN("nexus", "nexus {}: rebuild of {}: reading blocks {}+{} from {} failed ({}); trying another child",
              nx_.name(), child_.ToString(), lba, blocks, src->uri, errc_describe(e));
  }
  Nexus::Child* d = nx_.rebuild_destination(child_, incarnation_);
  if (!d) co_return SegmentResult{SegmentError::kNoSource, Status(Errc::kNoDev, "the destination went away")};
  const uint64_t bytes = blocks * nx_.layout().block_size;
  Errc e = Errc::kOk;
  if (!zeros) {
    e = co_await d->io(IoType::kWrite, buf, lba, blocks);
  } else if (co_await allocation(*d, lba, blocks) != Allocation::kUnallocated) {
    if (d->desc && d->desc->bdev().supports(IoType::kWriteZeroes)) {
      e = co_await d->io(IoType::kWriteZeroes, nullptr, lba, blocks);
    } else {
      std::memset(buf, 0, bytes);
      e = co_await d->io(IoType::kWrite, buf, lba, blocks);
    }
  }
  if (e != Errc::kOk) {
    co_return SegmentResult{SegmentError::kDestination,
                            Status::Errorf(e, "{} blocks {}+{} on the destination failed: {}", zeros ? "zeroing" : "writing",
                                           lba, blocks, errc_describe(e))};
  }
  if (vbufs_) {
    // Verify: the destination reads back what the source holds (still under the window's lock).
    uint8_t* vb = vbufs_ + (buf - bufs_base_);
    e = co_await d->io(IoType::kRead, vb, lba, blocks);
    bool same = e == Errc::kOk;
    if (same && zeros) {
      for (uint64_t i = 0; i < bytes && same; ++i) same = vb[i] == 0;
    } else if (same) {
      same = std::memcmp(vb, buf, bytes) == 0;
    }
    if (!same) {
      co_return SegmentResult{SegmentError::kDestination,
                              e != Errc::kOk ? Status::Errorf(e, "verify: reading blocks {}+{} back from the destination "
                                                                 "failed: {}", lba, blocks, errc_describe(e))
                                             : Status::Errorf(Errc::kIo, "verify: blocks {}+{} on the destination differ "
                                                                         "from the source after the copy", lba, blocks)};
    }
    stats_.verified_bytes += bytes;
  }
  (zeros ? stats_.skipped_bytes : stats_.copied_bytes) += bytes;
  co_return SegmentResult{};
}

uint64_t RebuildJob::plan_partial(uint64_t lba, uint64_t max_end, uint64_t cap_blocks, uint64_t seg,
                                  std::vector<Piece>* pieces) const {
  const uint32_t bs = nx_.layout().block_size;
  const uint64_t rb = (uint64_t(1) << dirty_->region_shift) / bs;  // blocks per region
  const std::vector<uint64_t>& bits = dirty_->bits;
  uint64_t used = 0;  // blocks of the buffers taken
  uint64_t at = lba;
  while (at < max_end) {
    const uint64_t r = at / rb;
    if ((r >> 6) >= bits.size()) return max_end;
    if (bits[r >> 6] == 0 && (r & 63) == 0) {  // 64 clean regions at once
      at = std::min(max_end, (r + 64) * rb);
      continue;
    }
    const uint64_t end = std::min(max_end, (r + 1) * rb);
    if (!(bits[r >> 6] & (uint64_t(1) << (r & 63)))) {
      at = end;
      continue;
    }
    // A marked region: into the buffers, contiguous with the last piece while it is under a segment.
    for (uint64_t pos = at; pos < end;) {
      if (used == cap_blocks) return pos;  // the buffers are full: the window ends here
      const uint64_t room = cap_blocks - used;
      Piece* last = pieces->empty() ? nullptr : &pieces->back();
      if (last && last->lba + last->blocks == pos && last->blocks < seg) {
        const uint64_t k = std::min({end - pos, seg - last->blocks, room});
        last->blocks += k;
        used += k;
        pos += k;
      } else {
        const uint64_t k = std::min({end - pos, seg, room});
        pieces->push_back({pos, k, used * bs});
        used += k;
        pos += k;
      }
    }
    at = end;
  }
  return max_end;
}

Task<void> RebuildJob::checkpoint() {
  if (!token_ || stats_.done_bytes == checkpointed_) co_return;
  Nexus::Child* d = nx_.rebuild_destination(child_, incarnation_);
  if (!d) co_return;
  Status st = co_await nx_.write_checkpoint(*d, token_, stats_.done_bytes);
  if (st.ok()) {
    checkpointed_ = stats_.done_bytes;
  } else {
    TLOG_WARN("nexus", "nexus {}: rebuild of {}: checkpoint at {} bytes: {}", nx_.name(), stats_.uri, stats_.done_bytes, st);
  }
}

Task<void> RebuildJob::copy_all() {
  const uint32_t bs = nx_.layout().block_size;
  const uint64_t total = nx_.layout().volume_blocks();
  const uint64_t seg = opts_.segment_bytes / bs;
  const uint64_t window = seg * opts_.concurrency;
  // One buffer per segment in flight, for the whole job.
  AlignedBuffer bufs(opts_.segment_bytes * opts_.concurrency, 4096);
  AlignedBuffer vbufs(opts_.verify ? opts_.segment_bytes * opts_.concurrency : 0, 4096);
  bufs_base_ = bufs.data();
  vbufs_ = opts_.verify ? vbufs.data() : nullptr;
  uint64_t lba = stats_.done_bytes / bs;
  uint64_t lock_failing_since = 0;
  while (lba < total) {
    if (stop_) {
      co_await checkpoint();
      co_return finish(RebuildState::kStopped, {});
    }
    if (nx_.shutdown_.load(std::memory_order_acquire)) {
      co_await checkpoint();
      co_return finish(RebuildState::kStopped, "the nexus shut down");
    }
    if (pause_) {
      co_await checkpoint();
      account_running();
      stats_.state = RebuildState::kPaused;
      TLOG_INFO("nexus", "nexus {}: rebuild of {} paused at {} of {} bytes", nx_.name(), child_.ToString(),
                stats_.done_bytes, stats_.total_bytes);
      while (pause_ && !stop_ && !nx_.shutdown_.load(std::memory_order_acquire)) co_await Reactor::sleep_for(10'000'000);
      run_started_ns_ = now_ns();
      stats_.state = RebuildState::kRunning;
      next_due_ns_ = 0;
      continue;
    }
    if (!nx_.rebuild_destination(child_, incarnation_)) {
      co_return finish(RebuildState::kFailed, "the destination went away (faulted, closed or removed)");
    }
    // What this window copies: full, `concurrency` segments; partial, the marked runs from here on, as
    // many as fill the same buffers, over at most kPartialSpan windows of the volume (scattered regions
    // then cost a round trip per window, not one per region).
    uint64_t n = std::min(window, total - lba);
    std::vector<Piece> pieces;
    if (dirty_) {
      n = plan_partial(lba, std::min(total, lba + window * kPartialSpan), window, seg, &pieces) - lba;
      if (pieces.empty()) {
        lba += n;  // nothing written here while the child was away
        stats_.done_bytes = lba * bs;
        continue;
      }
    } else {
      for (uint64_t off = 0; off < n; off += seg) pieces.push_back({lba + off, std::min(seg, n - off), off * bs});
    }
    // Rate limit: each window is paid for before it starts.
    if (opts_.rate_bytes_per_s > 0) {
      const uint64_t t = now_ns();
      if (next_due_ns_ > t) co_await Reactor::sleep_for(next_due_ns_ - t);
      uint64_t bytes = 0;
      for (const Piece& p : pieces) bytes += p.blocks * bs;
      const uint64_t cost = uint64_t(double(bytes) * 1e9 / double(opts_.rate_bytes_per_s));
      next_due_ns_ = std::max(next_due_ns_, now_ns()) + cost;
    }
    Status locked = co_await nx_.lock_range(lba, n, opts_.lock_timeout_ns);
    if (!locked.ok()) {
      // Busy (host writes would not drain, or another lock): try again; give up after the timeout.
      const uint64_t t = now_ns();
      if (lock_failing_since == 0) lock_failing_since = t;
      if (t - lock_failing_since > opts_.lock_timeout_ns) {
        co_return finish(RebuildState::kFailed, fmt::format("could not lock blocks {}+{}: {}", lba, n, locked.message()));
      }
      co_await Reactor::sleep_for(10'000'000);
      continue;
    }
    lock_failing_since = 0;
    std::vector<Task<SegmentResult>> parts;
    for (const Piece& p : pieces) parts.push_back(copy_segment(p.lba, p.blocks, bufs.data() + p.buf_offset));
    std::vector<SegmentResult> results = co_await when_all(std::move(parts));
    co_await nx_.unlock_range();
    for (auto& r : results) {
      if (r.error == SegmentError::kNone) continue;
      dest_failed_ = r.error == SegmentError::kDestination;
      co_return finish(RebuildState::kFailed, std::string(r.status.message()));
    }
    lba += n;
    stats_.done_bytes = lba * bs;
    if (stats_.done_bytes - checkpointed_ >= opts_.checkpoint_bytes && lba < total) co_await checkpoint();
  }
  copied_ = true;  // completed once the nexus has made the child in sync (run())
}

Task<void> RebuildJob::run() {
  TLOG_INFO("nexus", "nexus {}: rebuild of {} started ({}, {} bytes{})", nx_.name(), child_.ToString(),
            rebuild_kind_name(stats_.kind), stats_.total_bytes,
            opts_.rate_bytes_per_s ? fmt::format(", at most {} bytes/s", opts_.rate_bytes_per_s) : std::string());
  if (Nexus::Child* d = nx_.rebuild_destination(child_, incarnation_)) stats_.uri = d->uri;
  co_await copy_all();
  vbufs_ = bufs_base_ = nullptr;  // (copy_all's buffers are gone)
  if (copied_) {
    Status st = co_await nx_.complete_rebuild(child_, incarnation_);
    if (st.ok()) {
      finish(RebuildState::kCompleted, {});
    } else {
      finish(st.code() == Errc::kShutdown ? RebuildState::kStopped : RebuildState::kFailed, std::string(st.message()));
      dest_failed_ = st.code() == Errc::kIo;
    }
  }
  if (dest_failed_) co_await nx_.rebuild_failed(child_, incarnation_);
  const RebuildStats s = stats();
  if (s.state == RebuildState::kCompleted) {
    TLOG_INFO("nexus", "nexus {}: rebuild of {} completed: {} bytes copied in {} ms ({} MB/s)", nx_.name(), s.uri,
              s.copied_bytes, s.elapsed_ns / 1'000'000, s.bytes_per_s / 1'000'000);
  } else {
    TLOG_WARN("nexus", "nexus {}: rebuild of {} {} at {} of {} bytes: {}", nx_.name(), s.uri, rebuild_state_name(s.state),
              s.done_bytes, s.total_bytes, s.error);
  }
  nx_.rebuild_ended(*this);
  ended_ = true;
}

}  // namespace tern::nexus
