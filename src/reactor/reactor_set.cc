#include "reactor/reactor_set.h"

#include <sched.h>

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <mutex>
#include <semaphore>
#include <set>
#include <thread>

#include "common/clock.h"
#include "common/log.h"

namespace tern {
namespace {

std::set<int> allowed_cores() {
  cpu_set_t cs;
  CPU_ZERO(&cs);
  std::set<int> out;
  if (sched_getaffinity(0, sizeof(cs), &cs) != 0) return out;
  for (int i = 0; i < CPU_SETSIZE; ++i)
    if (CPU_ISSET(i, &cs)) out.insert(i);
  return out;
}

Result<int> parse_int(std::string_view spec, std::string_view s) {
  int v = -1;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size() || v < 0 || v >= CPU_SETSIZE) {
    return Status::Errorf(Errc::kInval, "invalid core list '{}': '{}' is not a core number", spec, s);
  }
  return v;
}

}  // namespace

std::string allowed_cores_string() {
  std::string out;
  auto cores = allowed_cores();
  for (auto it = cores.begin(); it != cores.end();) {
    int lo = *it, hi = lo;
    ++it;
    while (it != cores.end() && *it == hi + 1) hi = *it++;
    if (!out.empty()) out += ",";
    out += lo == hi ? fmt::format("{}", lo) : fmt::format("{}-{}", lo, hi);
  }
  return out;
}

Result<std::vector<int>> parse_core_list(std::string_view spec) {
  std::vector<int> cores;
  if (spec.empty()) return Status(Errc::kInval, "empty core list");
  if (spec.size() > 2 && spec[0] == '0' && (spec[1] == 'x' || spec[1] == 'X')) {
    std::string_view hex = spec.substr(2);
    for (size_t i = 0; i < hex.size(); ++i) {
      char c = hex[hex.size() - 1 - i];
      int v = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
      if (v < 0) return Status::Errorf(Errc::kInval, "invalid core mask '{}': '{}' is not a hex digit", spec, c);
      for (int b = 0; b < 4; ++b)
        if (v & (1 << b)) cores.push_back(int(i) * 4 + b);
    }
    std::sort(cores.begin(), cores.end());
    if (cores.empty()) return Status::Errorf(Errc::kInval, "core mask '{}' selects no core", spec);
  } else {
    size_t pos = 0;
    while (pos <= spec.size()) {
      size_t comma = spec.find(',', pos);
      std::string_view part = spec.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
      size_t dash = part.find('-');
      if (dash == std::string_view::npos) {
        TERN_ASSIGN_OR_RETURN(int c, parse_int(spec, part));
        cores.push_back(c);
      } else {
        TERN_ASSIGN_OR_RETURN(int lo, parse_int(spec, part.substr(0, dash)));
        TERN_ASSIGN_OR_RETURN(int hi, parse_int(spec, part.substr(dash + 1)));
        if (hi < lo) return Status::Errorf(Errc::kInval, "invalid core list '{}': range '{}' is reversed", spec, part);
        for (int c = lo; c <= hi; ++c) cores.push_back(c);
      }
      if (comma == std::string_view::npos) break;
      pos = comma + 1;
    }
  }
  std::set<int> seen;
  auto allowed = allowed_cores();
  for (int c : cores) {
    if (!seen.insert(c).second) return Status::Errorf(Errc::kInval, "core list '{}' names core {} twice", spec, c);
    if (!allowed.count(c)) {
      return Status::Errorf(Errc::kInval, "core {} (from '{}') is not available to this process (allowed: {})", c,
                            spec, allowed_cores_string());
    }
  }
  return cores;
}

Result<std::unique_ptr<ReactorSet>> ReactorSet::Start(const ReactorSetOptions& opts) {
  if (opts.cores.empty()) return Status(Errc::kInval, "at least one reactor core is required");
  if (opts.reactor.ring_entries == 0 || (opts.reactor.ring_entries & (opts.reactor.ring_entries - 1)) != 0 ||
      opts.reactor.ring_entries > 32768) {
    return Status::Errorf(Errc::kInval, "ring entries must be a power of two from 1 to 32768, got {}",
                          opts.reactor.ring_entries);
  }
  std::unique_ptr<ReactorSet> set(new ReactorSet(opts));
  for (unsigned i = 0; i < opts.cores.size(); ++i) {
    set->reactors_.emplace_back(new Reactor(set.get(), i, opts.cores[i], opts.reactor));
  }
  std::vector<std::unique_ptr<Reactor::ReadyState>> ready;
  for (auto& r : set->reactors_) {
    ready.emplace_back(new Reactor::ReadyState());
    Reactor* rp = r.get();
    Reactor::ReadyState* rs = ready.back().get();
    bool pin = opts.pin;
    r->thread_ = std::thread([rp, rs, pin] { rp->thread_main(rs, pin); });
  }
  Status first_error;
  for (auto& rs : ready) {
    std::unique_lock lk(rs->mu);
    rs->cv.wait(lk, [&] { return rs->done; });
    if (!rs->status.ok() && first_error.ok()) first_error = rs->status;
  }
  if (!first_error.ok()) {
    set->stop();
    return first_error;
  }
  if (opts.reactor.clock) opts.reactor.clock->attach(set.get());
  return set;
}

void ManualClock::advance(uint64_t ns) {
  now_.fetch_add(ns, std::memory_order_acq_rel);
  // Each reactor reads the clock at its next turn; a message gets a sleeping one there.
  if (ReactorSet* set = set_.load(std::memory_order_acquire)) {
    for (unsigned r = 0; r < set->size(); ++r) set->post(r, [] {});
  }
}

ReactorSet::~ReactorSet() { stop(); }

bool ReactorSet::post(unsigned target, Reactor::Message fn) {
  Reactor& dst = *reactors_[target];
  Reactor* cur = Reactor::current();
  if (cur && &cur->set() == this) {
    // Reactors keep talking while the set drains at shutdown.
    cur->send(target, std::move(fn));
    return true;
  }
  // A thread outside the set. stop() waits for posts that passed this check (Dekker pairing with
  // stopped_), so a message accepted here is always run.
  foreign_posts_.fetch_add(1, std::memory_order_seq_cst);
  if (stopped_.load(std::memory_order_seq_cst)) {
    foreign_posts_.fetch_sub(1, std::memory_order_seq_cst);
    return false;
  }
  unsigned spins = 0;
  while (!dst.push_inbox(fn)) {
    if (++spins < 64) std::this_thread::yield();
    else std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  dst.wake();
  foreign_posts_.fetch_sub(1, std::memory_order_seq_cst);
  return true;
}

// Runs `fn` on `r` even after stop began, and waits for it (used only by stop()).
void ReactorSet::probe(Reactor& r, SmallFunction<void()> fn) {
  std::binary_semaphore done(0);
  Reactor::Message m([&] {
    fn();
    done.release();
  });
  while (!r.push_inbox(m)) std::this_thread::yield();
  r.wake();
  done.acquire();
}

void ReactorSet::stop() {
  if (stopped_.exchange(true, std::memory_order_seq_cst)) return;
  if (opts_.reactor.clock) opts_.reactor.clock->detach(this);
  while (foreign_posts_.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
  for (auto& r : reactors_) r->stop_requested_.store(true, std::memory_order_release);

  // Run until the whole set is quiescent: two consecutive rounds in which every reactor is idle (no
  // messages, deferred work or ring operations) and no reactor sent or processed a message in between.
  // Waiting for each reactor alone is not enough: one that drains may still send to one that exited.
  const uint64_t timeout = opts_.reactor.drain_timeout_ns;
  uint64_t start = now_ns();
  bool cancelled = false;
  std::vector<Reactor::Activity> prev;
  for (;;) {
    std::vector<Reactor::Activity> cur(reactors_.size());
    for (size_t i = 0; i < reactors_.size(); ++i) {
      Reactor* r = reactors_[i].get();
      if (!r->running_) {
        cur[i] = {true, 0, 0};  // never started
        continue;
      }
      probe(*r, [r, &cur, i] {
        ++r->probes_;
        cur[i] = r->activity();
      });
    }
    bool all_idle = std::all_of(cur.begin(), cur.end(), [](const Reactor::Activity& a) { return a.idle; });
    bool same = prev.size() == cur.size();
    for (size_t i = 0; same && i < cur.size(); ++i) {
      same = prev[i].idle && prev[i].sent == cur[i].sent && prev[i].processed == cur[i].processed;
    }
    if (all_idle && same) break;
    prev = std::move(cur);
    uint64_t elapsed = now_ns() - start;
    if (elapsed > timeout) {
      if (cancelled) {
        TLOG_ERROR("reactor", "reactors still busy {} ms after stop; exiting anyway", elapsed / 1000000);
        break;
      }
      for (auto& r : reactors_) {
        Reactor* rp = r.get();
        if (rp->running_) probe(*rp, [rp] { rp->cancel_all_inflight(); });
      }
      cancelled = true;
      start = now_ns();
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  for (auto& r : reactors_) {
    r->exit_now_.store(true, std::memory_order_seq_cst);
    r->wake();
  }
  for (auto& r : reactors_) {
    if (r->thread_.joinable()) r->thread_.join();
  }
}

}  // namespace tern
