// delay:///name?base=<device>[&read_us=N][&write_us=N][&other_us=N][&jitter_us=N][&uuid=U] — passes I/O
// to its base and holds each completion until the configured latency (plus a random jitter) has passed
// since submission: a slow device, as seen by its user.
#include "bdev/backends.h"
#include "bdev/fault_bdevs.h"
#include "bdev/wrapper_io.h"
#include "common/clock.h"

namespace tern {

class DelayChannel final : public ChannelCtx {
 public:
  DelayChannel(DelayBdev* b, ChannelRef base) : bdev(b), base(std::move(base)), rng(0x2545f4914f6cdd1dull ^ uintptr_t(this)) {}
  uint64_t next_random() {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
  }
  DelayBdev* bdev;
  ChannelRef base;
  ChildIoPool pool;
  uint64_t rng;
};

DelayBdev::DelayBdev(BdevProps p, std::unique_ptr<BdevDesc> base, DelayConfig cfg)
    : Bdev(std::move(p)), base_(std::move(base)) {
  set_config(cfg);
}
DelayBdev::~DelayBdev() = default;

void DelayBdev::set_config(const DelayConfig& c) {
  read_ns_.store(c.read_ns, std::memory_order_relaxed);
  write_ns_.store(c.write_ns, std::memory_order_relaxed);
  other_ns_.store(c.other_ns, std::memory_order_relaxed);
  jitter_ns_.store(c.jitter_ns, std::memory_order_relaxed);
}

DelayConfig DelayBdev::config() const {
  return {read_ns_.load(), write_ns_.load(), other_ns_.load(), jitter_ns_.load()};
}

bool DelayBdev::supports(IoType t) const { return base_->bdev().supports(t); }

Result<std::unique_ptr<ChannelCtx>> DelayBdev::create_channel(Reactor&) {
  auto base = ChannelRef::Get(*base_);
  if (!base.ok()) return base.status();
  return std::unique_ptr<ChannelCtx>(new DelayChannel(this, std::move(*base)));
}

void DelayBdev::submit(ChannelCtx* ctx, BdevIo* io) {
  auto* ch = static_cast<DelayChannel*>(ctx);
  ChildIo* f = ch->pool.get(io, ch);
  forward_io(ch->base, f, io, [](BdevIo* c, void* arg) {
    ChildIo* fw = ChildIo::from(arg);
    auto* dch = static_cast<DelayChannel*>(fw->owner);
    DelayBdev* b = dch->bdev;
    BdevIo* parent = fw->parent;
    uint64_t want = parent->type == IoType::kRead    ? b->read_ns_.load(std::memory_order_relaxed)
                    : parent->type == IoType::kWrite ? b->write_ns_.load(std::memory_order_relaxed)
                                                     : b->other_ns_.load(std::memory_order_relaxed);
    if (uint64_t j = b->jitter_ns_.load(std::memory_order_relaxed)) want += dch->next_random() % j;
    uint64_t elapsed = now_ns() - parent->submit_ns;
    parent->status = c->status;  // kept until the timer completes it
    if (elapsed >= want) {
      dch->pool.put(fw);
      bdev_io_complete(parent, parent->status);
      return;
    }
    fw->timer.set_callback([fw] {
      BdevIo* p = fw->parent;
      static_cast<DelayChannel*>(fw->owner)->pool.put(fw);
      bdev_io_complete(p, p->status);
    });
    fw->timer.arm(want - elapsed);
  });
}

Task<void> DelayBdev::shutdown() {
  base_.reset();
  co_return;
}

Task<Result<std::unique_ptr<Bdev>>> make_delay_bdev(const Uri& uri, BdevRegistry& reg) {
  auto q = UriQuery::Make(uri, {"base", "read_us", "write_us", "other_us", "jitter_us", "uuid"});
  if (!q.ok()) co_return q.status();
  auto name = name_from_path(uri);
  if (!name.ok()) co_return name.status();
  DelayConfig cfg;
  constexpr uint64_t kMaxUs = 60'000'000;  // a minute: anything longer is a hang, use the error device
  for (auto [key, field] : {std::pair{"read_us", &cfg.read_ns}, std::pair{"write_us", &cfg.write_ns},
                            std::pair{"other_us", &cfg.other_ns}, std::pair{"jitter_us", &cfg.jitter_ns}}) {
    auto v = q->u64(key, 0, kMaxUs);
    if (!v.ok()) co_return v.status();
    if (*v) *field = **v * 1000;
  }
  auto uuid = uuid_param(uri, *q);
  if (!uuid.ok()) co_return uuid.status();
  auto desc = open_wrapper_base(reg, uri, *name, q->str("base").value_or(""));
  if (!desc.ok()) co_return desc.status();
  BdevProps p = wrapper_props((*desc)->bdev(), *name, *uuid, "delay");
  co_return std::unique_ptr<Bdev>(new DelayBdev(std::move(p), std::move(*desc), cfg));
}

}  // namespace tern
