// Fault-injection devices: wrappers that sit on top of another device and pass I/O through it,
// failing, hanging or slowing down the requests a rule selects. Tests (and later the engine's fault API)
// drive them at run time; the I/O takes exactly the path production I/O takes.
//
//   error:///name?base=<device>[&rule=<spec>][&uuid=U]
//   delay:///name?base=<device>[&read_us=N][&write_us=N][&other_us=N][&jitter_us=N][&uuid=U]
//
// Threads: configuration calls come from any thread; each reactor picks up a new configuration at its
// next I/O. A wrapper opens its base device; if the base is destroyed with force, the wrapper removes
// itself.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bdev/bdev.h"
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

 private:
  friend class DelayChannel;
  std::unique_ptr<BdevDesc> base_;
  std::atomic<uint64_t> read_ns_, write_ns_, other_ns_, jitter_ns_;
};

}  // namespace tern
