// Fault-injection devices: wrappers that sit on top of another device and pass I/O through it,
// failing, hanging or slowing down the requests a rule selects. Tests (and later the engine's fault API)
// drive them at run time; the I/O takes exactly the path production I/O takes.
//
//   error:///name?base=<device>[&rule=<spec>][&uuid=U]
//   delay:///name?base=<device>[&read_us=N][&write_us=N][&other_us=N][&jitter_us=N][&uuid=U]
//   powercut:///name?base=<device>[&cut_at=N][&persist=P][&seed=S][&uuid=U]
//
// Threads: configuration calls come from any thread; each reactor picks up a new configuration at its
// next I/O. A wrapper opens its base device; if the base is destroyed with force, the wrapper removes
// itself.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "bdev/bdev.h"
#include "reactor/task_scope.h"
#include "common/result.h"

namespace tern {

// Which requests fail, and how.
//   spec: comma-separated key=value: op=read|write|flush|unmap|write_zeroes|reset|all (repeatable, '+'
//   joins several: op=read+write; "all", the default, is every type but reset, which must be named),
//   lba=A-B (blocks, end exclusive; requests overlapping it match),
//   count=N (fail the next N matching requests; default unlimited), prob=P (0..1, chance a matching
//   request fails), kind=error|media|timeout|corrupt, errno=EIO|ENOSPC|... (kind=error), hold_ms=N
//   (kind=timeout: complete with ETIMEDOUT after N ms; 0 = hold until the device is reset).
//   kind=corrupt applies to reads: the read succeeds but one bit of the returned data is flipped, as a
//   disk that silently returns bad data would (what checksums and verifiers exist to catch).
struct ErrorRule {
  enum class Kind { kError, kMediaError, kTimeout, kCorrupt };
  static constexpr uint32_t kAllButReset = 0x1f;
  uint32_t ops = kAllButReset;  // bit (1 << IoType)
  uint64_t lba_begin = 0;
  uint64_t lba_end = UINT64_MAX;
  int64_t count = -1;
  double probability = 1.0;
  Kind kind = Kind::kError;
  Errc error = Errc::kIo;
  uint64_t hold_ns = 0;

  static Result<ErrorRule> Parse(std::string_view spec);
  std::string ToString() const;
};

class ErrorChannel;

class ErrorBdev final : public Bdev {
 public:
  struct RuleState {
    ErrorRule rule;
    std::atomic<int64_t> remaining{0};
    std::atomic<uint64_t> hits{0};
  };
  using RuleSet = std::vector<std::shared_ptr<RuleState>>;

  ErrorBdev(BdevProps p, std::unique_ptr<BdevDesc> base, unsigned reactors);
  ~ErrorBdev() override;

  void set_rules(const std::vector<ErrorRule>& rules);
  void add_rule(const ErrorRule& rule);
  void clear_rules();
  std::vector<ErrorRule> rules() const;
  // Requests failed or held so far, over all rules ever set.
  uint64_t injected() const { return injected_.load(); }

  bool supports(IoType t) const override;
  Result<std::unique_ptr<ChannelCtx>> create_channel(Reactor& r) override;
  void submit(ChannelCtx* ctx, BdevIo* io) override;
  Task<void> shutdown() override;
  // Passed through to the base (rules apply to I/O only).
  Task<Result<BlockStatus>> block_status(uint64_t offset_blocks, uint64_t max_blocks) override {
    co_return co_await base_->bdev().block_status(offset_blocks, max_blocks);
  }
  Task<void> on_remove() override;

 private:
  friend class ErrorChannel;
  std::unique_ptr<BdevDesc> base_;
  mutable std::mutex mu_;
  std::shared_ptr<const RuleSet> rules_;
  std::atomic<uint64_t> version_{1};
  std::atomic<uint64_t> injected_{0};
  std::vector<ErrorChannel*> channels_;  // per reactor; each entry touched only by its reactor
};

struct DelayConfig {
  uint64_t read_ns = 0;
  uint64_t write_ns = 0;
  uint64_t other_ns = 0;   // flush, unmap, write zeroes, reset
  uint64_t jitter_ns = 0;  // a uniform random extra in [0, jitter)
};

class DelayBdev final : public Bdev {
 public:
  DelayBdev(BdevProps p, std::unique_ptr<BdevDesc> base, DelayConfig cfg);
  ~DelayBdev() override;

  void set_config(const DelayConfig& c);
  DelayConfig config() const;

  bool supports(IoType t) const override;
  Result<std::unique_ptr<ChannelCtx>> create_channel(Reactor& r) override;
  void submit(ChannelCtx* ctx, BdevIo* io) override;
  Task<void> shutdown() override;
  Task<Result<BlockStatus>> block_status(uint64_t offset_blocks, uint64_t max_blocks) override {
    co_return co_await base_->bdev().block_status(offset_blocks, max_blocks);
  }

 private:
  friend class DelayChannel;
  std::unique_ptr<BdevDesc> base_;
  std::atomic<uint64_t> read_ns_, write_ns_, other_ns_, jitter_ns_;
};

// A disk with a volatile write cache that can lose power. Writes (and write-zeroes, unmaps, which read
// back as zeros) land in a cache in RAM and complete; reads see them. A flush destages every block cached
// when it was submitted to the base device, flushes the base, and only then completes: the base device
// always holds exactly what would survive a power cut. A cut keeps each cached block with probability
// `persist` (seeded), so later writes can survive while earlier ones are lost and a multi-block write can
// tear, then fails every later request with EIO, like a device that is gone. Recovery code is then run on
// the base device (a new wrapper, or the base itself).
//
// Write points: every write, write-zeroes, unmap and flush submitted is one event, numbered from 0.
// cut_at=N cuts power when event N is submitted (events 0..N-1 happened, N never does). A test counts
// the events of a scripted workload once, then reruns it cutting at each of them in turn.
//
// Test device: the cache is a hash map under a mutex, and reads overlay it block by block.
class PowerCutBdev final : public Bdev {
 public:
  static constexpr uint64_t kNever = UINT64_MAX;

  PowerCutBdev(BdevProps p, std::unique_ptr<BdevDesc> base, uint64_t cut_at, double persist, uint64_t seed,
               unsigned reactors);
  ~PowerCutBdev() override;

  // Cut power when event `at` is submitted (kNever: disarm). Any thread.
  void arm(uint64_t at, double persist, uint64_t seed);
  // Cut power now. On a reactor (the surviving blocks are written to the base from there; the device's
  // shutdown waits for that).
  void cut(double persist, uint64_t seed);
  // Events submitted so far (including the one that was cut), and whether power is off. Any thread.
  uint64_t events() const { return events_.load(); }
  bool is_cut() const { return cut_.load(); }
  // Blocks written since the last completed flush that covered them.
  size_t dirty_blocks() const;
  // Blocks a cut chose to keep, and to drop (over all cuts).
  uint64_t kept_blocks() const { return kept_.load(); }
  uint64_t dropped_blocks() const { return dropped_.load(); }

  bool supports(IoType t) const override;
  Result<std::unique_ptr<ChannelCtx>> create_channel(Reactor& r) override;
  void submit(ChannelCtx* ctx, BdevIo* io) override;
  Task<void> shutdown() override;
  // Follows its base (a grown file under a pool, in the crash tests of pool grow).
  Result<uint64_t> rescan() override {
    auto r = base_->bdev().rescan();
    if (!r.ok()) return r;
    grow_to(base_->bdev().num_blocks());
    return num_blocks() * bs_;
  }

 private:
  struct Block {
    uint64_t version;
    std::shared_ptr<uint8_t[]> data;  // null: zeros
  };
  struct Dirty {
    uint64_t lba;
    uint64_t version;
    std::shared_ptr<uint8_t[]> data;
  };
  friend class PowerCutChannel;
  // True if this request is the cut point (power is then off).
  bool count_event();
  void cut_and_destage(double persist, uint64_t seed);
  void cache_write(BdevIo* io);
  void overlay_read(BdevIo* io);
  Task<void> destage(std::vector<Dirty> blocks, BdevIo* flush_io);

  std::unique_ptr<BdevDesc> base_;
  const uint32_t bs_;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Block> cache_;
  uint64_t next_version_ = 1;
  std::atomic<uint64_t> events_{0};
  std::atomic<uint64_t> cut_at_;
  std::atomic<bool> cut_{false};
  double persist_;
  uint64_t seed_;
  std::atomic<uint64_t> kept_{0}, dropped_{0};
  PerReactorScopes destaging_;  // destages in flight hold channels to the base: shutdown waits for them
};

}  // namespace tern
