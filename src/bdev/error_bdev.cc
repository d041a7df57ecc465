// error:///name?base=<device>[&rule=<spec>][&uuid=U] — fails, corrupts the status of, or hangs the
// requests selected by its rules; everything else passes through to the base device.
#include <cstring>

#include "bdev/backends.h"
#include "bdev/fault_bdevs.h"
#include "bdev/wrapper_io.h"
#include "common/log.h"
#include "reactor/reactor_set.h"

namespace tern {

// ---------------------------------------------------------------------------------------------------
// Device

constexpr uint32_t kCorruptRead = 1;  // ChildIo::flags: flip a bit of the data the read returns

class ErrorChannel final : public ChannelCtx {
 public:
  ErrorChannel(ErrorBdev* b, ChannelRef base, unsigned reactor)
      : bdev(b), base(std::move(base)), reactor(reactor), rng(0x9e3779b97f4a7c15ull ^ uintptr_t(this)) {
    bdev->channels_[reactor] = this;
  }
  // A channel retires only with nothing in flight, so nothing can be held here any more.
  ~ErrorChannel() override { bdev->channels_[reactor] = nullptr; }

  const ErrorBdev::RuleSet* current_rules() {
    uint64_t v = bdev->version_.load(std::memory_order_acquire);
    if (v != version) {
      std::lock_guard lk(bdev->mu_);
      rules = bdev->rules_;
      version = v;
    }
    return rules.get();
  }
  uint64_t next_random() {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
  }
  double next_unit() { return double(next_random() >> 11) * (1.0 / double(1ull << 53)); }
  void hold(BdevIo* io, uint64_t hold_ns) {
    ChildIo* f = pool.get(io, this);
    f->next = held;
    held = f;
    if (hold_ns) {
      f->timer.set_callback([f] { static_cast<ErrorChannel*>(f->owner)->release_one(f, Errc::kTimedOut); });
      f->timer.arm(hold_ns);
    }
  }
  // From a timer: the hold expired.
  void release_one(ChildIo* f, Errc e) {
    for (ChildIo** pp = &held; *pp; pp = &(*pp)->next) {
      if (*pp == f) {
        *pp = f->next;
        break;
      }
    }
    BdevIo* io = f->parent;
    pool.put(f);
    bdev_io_complete(io, e);
  }
  // Completes everything held right now (not what gets held later), always from the loop: callers
  // may be inside a submit.
  void release_held(Errc e) {
    ChildIo* list = held;
    held = nullptr;
    while (list) {
      ChildIo* f = list;
      list = f->next;
      f->timer.cancel();
      BdevIo* io = f->parent;
      pool.put(f);
      bdev_io_complete_deferred(io, e);
    }
  }

  ErrorBdev* bdev;
  ChannelRef base;
  unsigned reactor;
  ChildIoPool pool;
  ChildIo* held = nullptr;
  std::shared_ptr<const ErrorBdev::RuleSet> rules;
  uint64_t version = 0;
  uint64_t rng;
};

ErrorBdev::ErrorBdev(BdevProps p, std::unique_ptr<BdevDesc> base, unsigned reactors)
    : Bdev(std::move(p)), base_(std::move(base)), rules_(std::make_shared<RuleSet>()), channels_(reactors, nullptr) {}

Task<void> ErrorBdev::on_remove() {
  // Held requests would keep their channels (and so the removal) waiting forever: abort them.
  ReactorSet& set = Reactor::current()->set();
  for (unsigned r = 0; r < channels_.size(); ++r) {
    co_await set.submit_to(r, [this, r] {
      if (ErrorChannel* ch = channels_[r]) ch->release_held(Errc::kCanceled);
    });
  }
}
ErrorBdev::~ErrorBdev() = default;

void ErrorBdev::set_rules(const std::vector<ErrorRule>& rules) {
  auto set = std::make_shared<RuleSet>();
  for (auto& r : rules) {
    auto st = std::make_shared<RuleState>();
    st->rule = r;
    st->remaining.store(r.count);
    set->push_back(std::move(st));
  }
  std::lock_guard lk(mu_);
  rules_ = std::move(set);
  version_.fetch_add(1, std::memory_order_release);
}

void ErrorBdev::add_rule(const ErrorRule& rule) {
  auto cur = rules();
  cur.push_back(rule);
  set_rules(cur);
}

void ErrorBdev::clear_rules() { set_rules({}); }

std::vector<ErrorRule> ErrorBdev::rules() const {
  std::lock_guard lk(mu_);
  std::vector<ErrorRule> out;
  for (auto& r : *rules_) {
    ErrorRule copy = r->rule;
    if (copy.count >= 0) copy.count = std::max<int64_t>(0, r->remaining.load());
    out.push_back(copy);
  }
  return out;
}

bool ErrorBdev::supports(IoType t) const { return base_->bdev().supports(t) || t == IoType::kReset; }

Result<std::unique_ptr<ChannelCtx>> ErrorBdev::create_channel(Reactor& r) {
  auto base = ChannelRef::Get(*base_);
  if (!base.ok()) return base.status();
  return std::unique_ptr<ChannelCtx>(new ErrorChannel(this, std::move(*base), r.id()));
}

void ErrorBdev::submit(ChannelCtx* ctx, BdevIo* io) {
  auto* ch = static_cast<ErrorChannel*>(ctx);
  const RuleSet* rules = ch->current_rules();
  bool corrupt = false;
  for (auto& rs : *rules) {
    const ErrorRule& r = rs->rule;
    if (r.kind == ErrorRule::Kind::kCorrupt && io->type != IoType::kRead) continue;
    if (!(r.ops & (1u << unsigned(io->type)))) continue;
    if (io->type != IoType::kFlush && io->type != IoType::kReset) {
      uint64_t end = io->offset_blocks + io->num_blocks;
      if (end <= r.lba_begin || io->offset_blocks >= r.lba_end) continue;
    }
    if (r.probability < 1.0 && ch->next_unit() >= r.probability) continue;
    if (r.count >= 0 && rs->remaining.fetch_sub(1, std::memory_order_relaxed) <= 0) continue;
    rs->hits.fetch_add(1, std::memory_order_relaxed);
    injected_.fetch_add(1, std::memory_order_relaxed);
    switch (r.kind) {
      case ErrorRule::Kind::kError:
        bdev_io_complete_deferred(io, r.error);
        return;
      case ErrorRule::Kind::kMediaError:
        bdev_io_complete_deferred(io, Errc::kMediaError);
        return;
      case ErrorRule::Kind::kTimeout:
        ch->hold(io, r.hold_ns);
        return;
      case ErrorRule::Kind::kCorrupt:
        corrupt = true;
        break;
    }
    if (corrupt) break;
  }
  if (io->type == IoType::kReset) {
    // A reset aborts what this device holds, then resets the base.
    ch->release_held(Errc::kCanceled);
  }
  ChildIo* f = ch->pool.get(io, ch);
  f->flags = corrupt ? kCorruptRead : 0;
  forward_io(ch->base, f, io, [](BdevIo* c, void* arg) {
    ChildIo* fw = ChildIo::from(arg);
    auto* ech = static_cast<ErrorChannel*>(fw->owner);
    BdevIo* parent = fw->parent;
    Errc e = c->status;
    if ((fw->flags & kCorruptRead) && e == Errc::kOk) {
      // Flip one bit somewhere in the data the caller will see.
      uint64_t at = ech->next_random() % parent->bytes();
      for (int i = 0; i < parent->iovcnt; ++i) {
        if (at < parent->iovs[i].iov_len) {
          static_cast<uint8_t*>(parent->iovs[i].iov_base)[at] ^= uint8_t(1u << (at % 8));
          break;
        }
        at -= parent->iovs[i].iov_len;
      }
    }
    ech->pool.put(fw);
    bdev_io_complete(parent, e);
  });
}

Task<void> ErrorBdev::shutdown() {
  base_.reset();
  co_return;
}

Task<Result<std::unique_ptr<Bdev>>> make_error_bdev(const Uri& uri, BdevRegistry& reg) {
  auto q = UriQuery::Make(uri, {"base", "rule", "uuid"});
  if (!q.ok()) co_return q.status();
  auto name = name_from_path(uri);
  if (!name.ok()) co_return name.status();
  std::vector<ErrorRule> rules;
  if (auto spec = q->str("rule")) {
    auto r = ErrorRule::Parse(*spec);
    if (!r.ok()) co_return r.status().WithContext(fmt::format("invalid URI '{}'", uri.text));
    rules.push_back(*r);
  }
  auto uuid = uuid_param(uri, *q);
  if (!uuid.ok()) co_return uuid.status();
  auto desc = open_wrapper_base(reg, uri, *name, q->str("base").value_or(""));
  if (!desc.ok()) co_return desc.status();
  BdevProps p = wrapper_props((*desc)->bdev(), *name, *uuid, "error");
  auto dev = std::make_unique<ErrorBdev>(std::move(p), std::move(*desc), reg.reactors().size());
  dev->set_rules(rules);
  co_return std::unique_ptr<Bdev>(std::move(dev));
}

}  // namespace tern
