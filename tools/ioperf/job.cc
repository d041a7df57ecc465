#include "job.h"

#include <semaphore>
#include <thread>

#include "bdev/registry.h"
#include "common/log.h"
#include "pool/pool.h"
#include "nvmf/host/nvmf_bdev.h"
#include "common/aligned_buffer.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/units.h"
#include "reactor/reactor_set.h"
#include "reactor/task_scope.h"

namespace tern::ioperf {

Result<Mode> parse_mode(std::string_view s) {
  if (s == "read") return Mode::kRead;
  if (s == "write") return Mode::kWrite;
  if (s == "randread") return Mode::kRandRead;
  if (s == "randwrite") return Mode::kRandWrite;
  if (s == "randrw") return Mode::kRandRw;
  if (s == "rw" || s == "readwrite") return Mode::kRw;
  return Status::Errorf(Errc::kInval, "unknown --rw '{}' (read, write, randread, randwrite, randrw, rw)", s);
}

std::string_view mode_name(Mode m) {
  switch (m) {
    case Mode::kRead: return "read";
    case Mode::kWrite: return "write";
    case Mode::kRandRead: return "randread";
    case Mode::kRandWrite: return "randwrite";
    case Mode::kRandRw: return "randrw";
    case Mode::kRw: return "rw";
  }
  return "?";
}

bool mode_writes(Mode m) { return m != Mode::kRead && m != Mode::kRandRead; }
bool mode_reads(Mode m) { return m != Mode::kWrite && m != Mode::kRandWrite; }
static bool mode_random(Mode m) { return m == Mode::kRandRead || m == Mode::kRandWrite || m == Mode::kRandRw; }

namespace {

constexpr uint32_t kGenUnknown = UINT32_MAX;
constexpr uint64_t kDrainTimeoutNs = 30'000'000'000ull;  // a write to this unit failed: its content is unknown

// Everything one core needs; touched only by that core's reactor once the run starts.
struct CoreJob {
  const JobSpec* spec = nullptr;
  unsigned index = 0;
  ChannelRef ch;
  uint32_t block_size = 512;
  uint64_t region_offset = 0;  // bytes: start of this core's share
  uint64_t units = 0;          // bs-sized units in the share
  uint64_t seq_next = 0;
  uint64_t rng = 1;
  bool has_quota = false;
  uint64_t quota = 0;
  uint64_t issued = 0;
  bool stop = false;
  unsigned active = 0;
  std::vector<AlignedBuffer> bufs;
  std::vector<AlignedBuffer> scratch;
  // verify state
  std::vector<uint32_t> gen;
  std::vector<uint8_t> busy;
  uint32_t gen_counter = 0;
  uint64_t verify_cursor = 0;
  // results
  OpResult read, write;
  uint64_t verified_bytes = 0;
  std::optional<Mismatch> mismatch;
  std::optional<std::string> first_error;
  uint64_t t_start = 0, t_end = 0, cpu_start = 0, cpu_end = 0, sleeps_start = 0, sleeps_end = 0, awaiting_end = 0;
  std::counting_semaphore<>* done_sem = nullptr;
  TaskScope workers{"ioperf workers"};  // the queue-depth coroutines of this core

  uint64_t next_rand() {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
  }
  void start_measuring() {
    read = OpResult();
    write = OpResult();
    t_start = now_ns();
    cpu_start = thread_cpu_ns();
    sleeps_start = Reactor::current()->counters().sleeps;
  }
  void worker_exit() {
    if (--active == 0) {
      t_end = now_ns();
      cpu_end = thread_cpu_ns();
      sleeps_end = Reactor::current()->counters().sleeps;
      awaiting_end = Reactor::current()->awaiting();
      done_sem->release();
    }
  }
  void record_error(IoType t, uint64_t off, Errc e) {
    if (!first_error) {
      first_error = fmt::format("{} of {} at byte offset {} failed: {}", io_type_name(t), format_size(spec->bs), off,
                                Status(e).ToString());
    }
    if (!spec->continue_on_error) stop = true;
  }
};

// Picks the unit for the next request; false if every candidate is busy (verify mode) — retry later.
bool pick_unit(CoreJob& j, uint64_t* unit) {
  const bool random = mode_random(j.spec->mode);
  for (int attempt = 0; attempt < 64; ++attempt) {
    uint64_t u = random ? j.next_rand() % j.units : j.seq_next++ % j.units;
    if (!j.spec->verify) {
      *unit = u;
      return true;
    }
    if (!j.busy[u]) {
      j.busy[u] = 1;
      *unit = u;
      return true;
    }
  }
  return false;
}

Task<void> run_worker(CoreJob& j, unsigned slot) {
  const JobSpec& s = *j.spec;
  uint8_t* buf = j.bufs[slot].data();
  const uint64_t nblocks = s.bs / j.block_size;
  while (!j.stop) {
    if (j.has_quota && j.issued >= j.quota) break;
    bool is_read;
    switch (s.mode) {
      case Mode::kRead:
      case Mode::kRandRead: is_read = true; break;
      case Mode::kWrite:
      case Mode::kRandWrite: is_read = false; break;
      default: is_read = j.next_rand() % 100 < s.mix_read_pct; break;
    }
    uint64_t unit;
    if (!pick_unit(j, &unit)) {
      co_await Reactor::yield();
      continue;
    }
    ++j.issued;
    const uint64_t off = j.region_offset + unit * s.bs;
    uint32_t gen = 0;
    if (!is_read && s.verify) {
      gen = ++j.gen_counter;
      if (gen == kGenUnknown) gen = j.gen_counter = 1;
      fill_pattern(buf, s.bs, off, gen);
    }
    auto aw = is_read ? j.ch.read(buf, off / j.block_size, nblocks) : j.ch.write(buf, off / j.block_size, nblocks);
    Errc e = co_await aw;
    OpResult& r = is_read ? j.read : j.write;
    ++r.ops;
    r.latency.record(aw.io.complete_ns - aw.io.submit_ns);
    if (e != Errc::kOk) {
      ++r.errors;
      if (!is_read && s.verify) j.gen[unit] = kGenUnknown;
      j.record_error(is_read ? IoType::kRead : IoType::kWrite, off, e);
    } else {
      r.bytes += s.bs;
      if (s.verify) {
        if (is_read) {
          uint32_t g = j.gen[unit];
          if (g != 0 && g != kGenUnknown) {
            Mismatch m;
            if (!check_pattern(buf, s.bs, off, g, j.scratch[slot].data(), &m)) {
              if (!j.mismatch) j.mismatch = m;
              j.stop = true;
            }
            j.verified_bytes += s.bs;
          }
        } else {
          j.gen[unit] = gen;
        }
      }
    }
    if (s.verify) j.busy[unit] = 0;
  }
  j.worker_exit();
}

// Final pass: reads back every unit this run wrote and checks it.
Task<void> run_verifier(CoreJob& j, unsigned slot) {
  const JobSpec& s = *j.spec;
  uint8_t* buf = j.bufs[slot].data();
  const uint64_t nblocks = s.bs / j.block_size;
  while (!j.stop) {
    while (j.verify_cursor < j.units && (j.gen[j.verify_cursor] == 0 || j.gen[j.verify_cursor] == kGenUnknown)) {
      ++j.verify_cursor;
    }
    if (j.verify_cursor >= j.units) break;
    uint64_t unit = j.verify_cursor++;
    const uint64_t off = j.region_offset + unit * s.bs;
    auto aw = j.ch.read(buf, off / j.block_size, nblocks);
    Errc e = co_await aw;
    if (e != Errc::kOk) {
      j.record_error(IoType::kRead, off, e);
      continue;
    }
    Mismatch m;
    if (!check_pattern(buf, s.bs, off, j.gen[unit], j.scratch[slot].data(), &m)) {
      if (!j.mismatch) j.mismatch = m;
      j.stop = true;
    }
    j.verified_bytes += s.bs;
  }
  j.worker_exit();
}

Status validate(const JobSpec& s) {
  if (s.bs == 0 || s.bs % kSector != 0) {
    return Status::Errorf(Errc::kInval, "--bs {} must be a positive multiple of 512", s.bs);
  }
  if (s.qd == 0 || s.qd > 4096) return Status::Errorf(Errc::kInval, "--qd {} must be from 1 to 4096", s.qd);
  if (s.mix_read_pct > 100) return Status::Errorf(Errc::kInval, "--mix {} must be from 0 to 100", s.mix_read_pct);
  if (s.time_ns == 0 && s.ios == 0) return Status(Errc::kInval, "give --time or --ios (or both)");
  if (s.verify && !mode_writes(s.mode)) {
    return Status(Errc::kInval,
                  "--verify needs a workload that writes (write, randwrite, randrw, rw): only data written by this "
                  "run can be checked");
  }
  return Status::Ok();
}

}  // namespace

Result<JobResult> run_job(const JobSpec& spec) {
  TERN_RETURN_IF_ERROR(validate(spec));
  ReactorSetOptions ro;
  ro.cores = spec.cores;
  ro.reactor.poll_mode = spec.poll_mode;
  ro.reactor.idle_spin_ns = spec.idle_spin_ns;
  ro.reactor.await_spin_ns = spec.await_spin_ns;
  TERN_ASSIGN_OR_RETURN(auto set, ReactorSet::Start(ro));
  const unsigned ncores = set->size();

  BdevRegistry registry(*set);
  nvmf::register_nvmf_backend(registry);
  std::unique_ptr<BdevDesc> desc;
  std::unique_ptr<pool::Pool> pool;
  // Everything below must be undone on every exit path: the reactors must not be stopped with devices open.
  auto teardown = [&](std::vector<CoreJob>* jobs) {
    if (jobs) {
      for (unsigned i = 0; i < jobs->size(); ++i) {
        set->run_sync(i, [&, i]() -> Task<void> {
          co_await (*jobs)[i].workers.close();  // every worker has signalled its exit; let its frame end
          (*jobs)[i].ch.reset();
        });
      }
    }
    set->run_sync(0, [&]() -> Task<void> {
      desc.reset();
      if (pool) {
        Status e = co_await pool->Export();
        if (!e.ok()) TLOG_ERROR("ioperf", "exporting the pool failed: {}", e);
        pool.reset();
      }
      co_await registry.destroy_all();
    });
    set->stop();
  };

  Status setup = set->run_sync(0, [&]() -> Task<Status> {
    for (auto& u : spec.extra_devices) {
      auto b = co_await registry.create(u);
      if (!b.ok()) co_return b.status();
    }
    Result<Bdev*> b = Status(Errc::kInval, "no device");
    if (!spec.pool_device.empty()) {
      auto p = co_await pool::Pool::Import(registry, spec.pool_device);
      if (!p.ok()) co_return p.status();
      pool = std::move(*p);
      std::optional<Uuid> id;
      for (const auto& r : pool->ListReplicas()) {
        if (!r.discarded && (r.name == spec.replica || r.uuid.ToString() == spec.replica)) id = r.uuid;
      }
      if (!id) {
        co_return Status::Errorf(Errc::kNoEnt, "pool '{}' has no replica or snapshot '{}'", pool->superblock().name,
                                 spec.replica);
      }
      b = pool->ExposeReplica(*id);
    } else {
      b = co_await registry.create(spec.uri);
    }
    if (!b.ok()) co_return b.status();
    auto d = registry.open((*b)->name(), mode_writes(spec.mode));
    if (!d.ok()) co_return d.status();
    desc = std::move(*d);
    co_return Status::Ok();
  });
  if (!setup.ok()) {
    teardown(nullptr);
    return setup;
  }

  const BdevProps props = desc->bdev().props();
  Status geometry = [&]() -> Status {
    if (spec.bs % props.block_size) {
      return Status::Errorf(Errc::kInval, "--bs {} is not a multiple of the device's block size {}", spec.bs,
                            props.block_size);
    }
    if (spec.offset % spec.bs) return Status::Errorf(Errc::kInval, "--offset {} is not a multiple of --bs", spec.offset);
    if (spec.offset >= props.size_bytes()) {
      return Status::Errorf(Errc::kInval, "--offset {} is beyond the device's {} bytes", spec.offset, props.size_bytes());
    }
    uint64_t avail = props.size_bytes() - spec.offset;
    uint64_t len = spec.size ? spec.size : avail;
    if (len > avail) {
      return Status::Errorf(Errc::kInval, "--offset {} + --size {} exceeds the device's {} bytes", spec.offset, len,
                            props.size_bytes());
    }
    if (len / spec.bs < ncores) {
      return Status::Errorf(Errc::kInval, "the region holds {} blocks of {} bytes: fewer than the {} cores", len / spec.bs,
                            spec.bs, ncores);
    }
    if (spec.verify && len / spec.bs > (uint64_t(1) << 31)) {
      return Status(Errc::kInval, "--verify keeps 5 bytes per block: limit the region with --size");
    }
    return Status::Ok();
  }();
  if (!geometry.ok()) {
    teardown(nullptr);
    return geometry;
  }
  const uint64_t region_len = spec.size ? spec.size : props.size_bytes() - spec.offset;
  const uint64_t total_units = region_len / spec.bs;

  std::counting_semaphore<> done_sem(0);
  std::vector<CoreJob> jobs(ncores);
  Status chan_status;
  for (unsigned i = 0; i < ncores; ++i) {
    CoreJob& j = jobs[i];
    j.spec = &spec;
    j.index = i;
    j.block_size = props.block_size;
    uint64_t ub = total_units * i / ncores, ue = total_units * (i + 1) / ncores;
    j.region_offset = spec.offset + ub * spec.bs;
    j.units = ue - ub;
    j.rng = (spec.seed + 1) * 0x9e3779b97f4a7c15ull ^ (uint64_t(i) << 32 | 1);
    if (spec.ios) {
      j.has_quota = true;
      j.quota = spec.ios / ncores + (i < spec.ios % ncores ? 1 : 0);  // may be 0 with fewer ios than cores
    }
    j.done_sem = &done_sem;
    size_t align = std::max<size_t>(AlignedBuffer::kDefaultAlign, props.buf_align);
    for (unsigned q = 0; q < spec.qd; ++q) {
      j.bufs.emplace_back(spec.bs, align, true);
      if (spec.verify) j.scratch.emplace_back(spec.bs, align);
    }
    if (spec.verify) {
      j.gen.assign(j.units, 0);
      j.busy.assign(j.units, 0);
    }
    Status st = set->run_sync(i, [&]() -> Status {
      auto ch = ChannelRef::Get(*desc);
      if (!ch.ok()) return ch.status();
      j.ch = std::move(*ch);
      return Status::Ok();
    });
    if (!st.ok() && chan_status.ok()) chan_status = st;
  }
  if (!chan_status.ok()) {
    teardown(&jobs);
    return chan_status;
  }

  auto launch = [&](bool verifier) {
    for (unsigned i = 0; i < ncores; ++i) {
      set->post(i, [&jobs, i, verifier] {
        CoreJob& j = jobs[i];
        j.active = j.spec->qd;
        if (verifier) {
          // Runs after the stop message posted at the end of the first phase (messages keep their
          // order), so clearing the flag here cannot be undone by it.
          j.stop = false;
          j.start_measuring();
          j.verify_cursor = 0;
        } else if (j.spec->ramp_ns == 0) {
          j.start_measuring();
        }
        for (unsigned q = 0; q < j.spec->qd; ++q) j.workers.spawn(verifier ? run_verifier(j, q) : run_worker(j, q));
      });
    }
  };
  // Waits until every core's workers have exited, or until `deadline_ns`; returns how many finished.
  unsigned finished = 0;
  auto wait_until = [&](uint64_t deadline_ns) {
    while (finished < ncores) {
      uint64_t now = now_ns();
      if (deadline_ns && now >= deadline_ns) break;
      auto left = std::chrono::nanoseconds(deadline_ns ? deadline_ns - now : 1'000'000'000ull);
      if (done_sem.try_acquire_for(left)) ++finished;
    }
  };
  auto stop_all = [&] {
    for (unsigned i = 0; i < ncores; ++i) set->post(i, [&jobs, i] { jobs[i].stop = true; });
  };

  launch(false);
  const uint64_t t0 = now_ns();
  if (spec.ramp_ns) {
    wait_until(t0 + spec.ramp_ns);
    for (unsigned i = 0; i < ncores; ++i) set->run_sync(i, [&jobs, i] { jobs[i].start_measuring(); });
  }
  const uint64_t t1 = now_ns();
  wait_until(spec.time_ns ? t1 + spec.time_ns : 0);
  stop_all();
  // Requests still in flight get a bounded time to finish; a device that never completes them (a hung
  // disk, an injected timeout without reset) cannot be torn down safely, so say so and leave.
  wait_until(now_ns() + kDrainTimeoutNs);
  if (finished < ncores) {
    fmt::print(stderr, "ioperf: requests still in flight {} s after the run stopped; the device is not completing "
               "I/O. Exiting without cleanup.\n", kDrainTimeoutNs / 1000000000);
    std::_Exit(3);
  }

  JobResult res;
  res.device = props;
  uint64_t start = UINT64_MAX, end = 0;
  for (auto& j : jobs) {
    res.read.merge(j.read);
    res.write.merge(j.write);
    start = std::min(start, j.t_start);
    end = std::max(end, j.t_end);
    uint64_t wall = j.t_end > j.t_start ? j.t_end - j.t_start : 1;
    res.cpu_pct.push_back(100.0 * double(j.cpu_end - j.cpu_start) / double(wall));
    res.sleeps.push_back(j.sleeps_end - j.sleeps_start);
    res.awaiting.push_back(j.awaiting_end);
    if (j.first_error && !res.first_error) res.first_error = j.first_error;
    if (j.mismatch && !res.mismatch) res.mismatch = j.mismatch;
  }
  res.elapsed_s = end > start ? double(end - start) / 1e9 : 0;

  if (spec.verify && !res.mismatch) {
    finished = 0;
    launch(true);
    wait_until(0);
    for (auto& j : jobs) {
      if (j.first_error && !res.first_error) res.first_error = j.first_error;
      if (j.mismatch && !res.mismatch) res.mismatch = j.mismatch;
    }
  }
  for (auto& j : jobs) res.verified_bytes += j.verified_bytes;
  teardown(&jobs);
  return res;
}

}  // namespace tern::ioperf
