#include "bdev/registry.h"

#include <algorithm>

#include "bdev/backends.h"
#include "common/log.h"
#include "reactor/reactor_set.h"

namespace tern {

Status validate_bdev_name(std::string_view name) {
  if (name.empty()) return Status(Errc::kInval, "device name is empty");
  if (name.size() > 255) return Status::Errorf(Errc::kInval, "device name '{}...' is longer than 255 characters", name.substr(0, 32));
  for (char c : name) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return Status::Errorf(Errc::kInval, "device name '{}' contains whitespace or control characters", name);
    }
  }
  return Status::Ok();
}

BdevRegistry::BdevRegistry(ReactorSet& reactors) : reactors_(reactors) { register_builtin_backends(*this); }

BdevRegistry::~BdevRegistry() {
  if (!devices_.empty()) {
    TLOG_WARN("bdev", "device registry destroyed with {} device(s) still registered", devices_.size());
  }
}

void BdevRegistry::register_scheme(const std::string& scheme, Factory f) { factories_[scheme] = std::move(f); }

std::vector<std::string> BdevRegistry::schemes() const {
  std::vector<std::string> out;
  for (auto& [k, v] : factories_) out.push_back(k);
  return out;
}

Task<Result<Bdev*>> BdevRegistry::create(std::string uri_text) {
  auto uri = Uri::Parse(uri_text);
  if (!uri.ok()) co_return uri.status();
  auto it = factories_.find(uri->scheme);
  if (it == factories_.end()) {
    std::string known;
    for (auto& [k, v] : factories_) known += (known.empty() ? "" : ", ") + k;
    co_return Status::Errorf(Errc::kInval, "invalid URI '{}': unknown scheme '{}' (known: {})", uri_text, uri->scheme,
                             known);
  }
  auto made = co_await it->second(*uri, *this);
  if (!made.ok()) co_return made.status();
  co_return add(std::move(*made), uri_text);
}

Status BdevRegistry::check_new_name(std::string_view name) const {
  TERN_RETURN_IF_ERROR(validate_bdev_name(name));
  for (auto& e : devices_) {
    if (e.bdev->name() == name) {
      return Status::Errorf(Errc::kExist, "device '{}' already exists{}", name,
                            e.uri.empty() ? "" : fmt::format(" (created from '{}')", e.uri));
    }
  }
  return Status::Ok();
}

Result<Bdev*> BdevRegistry::add(std::unique_ptr<Bdev> bdev, std::string created_from) {
  TERN_RETURN_IF_ERROR(check_new_name(bdev->name()));
  for (auto& e : devices_) {
    if (e.bdev->props().uuid == bdev->props().uuid) {
      return Status::Errorf(Errc::kExist, "device '{}' has UUID {}, already used by device '{}'", bdev->name(),
                            bdev->props().uuid, e.bdev->name());
    }
  }
  bdev->slots_.resize(reactors_.size());
  bdev->registry_ = this;
  bdev->registry_id_ = ++next_id_;
  Bdev* raw = bdev.get();
  devices_.push_back({std::move(bdev), std::move(created_from)});
  const BdevProps& p = raw->props();
  TLOG_INFO("bdev", "created {} device '{}' ({} x {} B blocks, uuid {})", p.product, p.name, p.num_blocks,
            p.block_size, p.uuid);
  return raw;
}

Bdev* BdevRegistry::find(std::string_view name_or_uuid) const {
  for (auto& e : devices_)
    if (e.bdev->name() == name_or_uuid) return e.bdev.get();
  auto u = Uuid::Parse(name_or_uuid);
  if (u.ok()) {
    for (auto& e : devices_)
      if (e.bdev->props().uuid == *u) return e.bdev.get();
  }
  return nullptr;
}

std::vector<Bdev*> BdevRegistry::list() const {
  std::vector<Bdev*> out;
  for (auto& e : devices_) out.push_back(e.bdev.get());
  return out;
}

std::string BdevRegistry::created_from(const Bdev& b) const {
  for (auto& e : devices_)
    if (e.bdev.get() == &b) return e.uri;
  return {};
}

Result<std::unique_ptr<BdevDesc>> BdevRegistry::open(std::string_view name, bool writable, BdevEventFn events) {
  Bdev* b = find(name);
  if (!b) return Status::Errorf(Errc::kNoDev, "no device named '{}'", name);
  if (b->removing_.load()) return Status::Errorf(Errc::kNoDev, "device '{}' is being removed", name);
  if (writable && b->claim_desc_ && b->claim_exclusive_) {
    return Status::Errorf(Errc::kBusy, "device '{}' is claimed by {}; it cannot be opened for writing", name,
                          b->claim_owner_);
  }
  std::unique_ptr<BdevDesc> d(new BdevDesc(b, writable, std::move(events)));
  b->descs_.push_back(d.get());
  return d;
}

Task<Status> BdevRegistry::destroy(std::string_view name_view, bool force, uint64_t timeout_ns) {
  std::string name(name_view);
  Bdev* b = find(name);
  if (!b) co_return Status::Errorf(Errc::kNoDev, "no device named '{}'", name);
  if (b->removing_.load()) co_return Status::Errorf(Errc::kBusy, "device '{}' is already being removed", name);
  if (!b->descs_.empty()) {
    if (!force) {
      co_return Status::Errorf(Errc::kBusy, "device '{}' is open by {} user(s){}; close it first or destroy with force",
                               name, b->descs_.size(),
                               b->claim_owner_.empty() ? "" : fmt::format(" and claimed by {}", b->claim_owner_));
    }
    b->removing_.store(true);
    // Holders may close their descriptor from inside the callback: iterate over a copy.
    std::vector<BdevDesc*> holders = b->descs_;
    for (BdevDesc* d : holders) {
      if (std::find(b->descs_.begin(), b->descs_.end(), d) == b->descs_.end()) continue;
      if (d->events_) d->events_(BdevEvent::kRemove);
    }
  }
  b->removing_.store(true);
  if (force) co_await b->on_remove();
  uint64_t waited = 0;
  constexpr uint64_t kStep = 1'000'000;
  while (!b->descs_.empty() || b->live_channels_.load() != 0) {
    if (waited >= timeout_ns) {
      b->removing_.store(false);
      co_return Status::Errorf(Errc::kTimedOut,
                               "device '{}' is still open by {} user(s) after {} ms of waiting for them to close",
                               name, b->descs_.size(), timeout_ns / 1000000);
    }
    co_await Reactor::sleep_for(kStep);
    waited += kStep;
  }
  co_await b->shutdown();
  auto it = std::find_if(devices_.begin(), devices_.end(), [&](const Entry& e) { return e.bdev.get() == b; });
  std::unique_ptr<Bdev> owned = std::move(it->bdev);
  devices_.erase(it);
  TLOG_INFO("bdev", "destroyed device '{}'", name);
  co_return Status::Ok();
}

void BdevRegistry::deliver_event(uint64_t id, BdevEvent ev) {
  Bdev* b = nullptr;
  for (auto& e : devices_) {
    if (e.bdev->registry_id_ == id) b = e.bdev.get();
  }
  if (!b) return;
  if (ev == BdevEvent::kFaulted) b->fault_pending_.store(false, std::memory_order_relaxed);
  TLOG_DEBUG("bdev", "device '{}': event {}", b->name(), bdev_event_name(ev));
  // Holders may close their descriptor from inside the callback: iterate over a copy.
  std::vector<BdevDesc*> holders = b->descs_;
  for (BdevDesc* d : holders) {
    if (std::find(b->descs_.begin(), b->descs_.end(), d) == b->descs_.end()) continue;
    if (d->events_) d->events_(ev);
  }
}

Task<void> BdevRegistry::destroy_all() {
  uint64_t waited = 0;
  while (!devices_.empty()) {
    Bdev* last = devices_.back().bdev.get();
    if (last->removing_.load() && waited < 30'000'000'000ull) {
      // Someone else is removing it (a forced destroy waiting for holders): let that finish.
      co_await Reactor::sleep_for(1'000'000);
      waited += 1'000'000;
      continue;
    }
    std::string name = last->name();
    Status st = co_await destroy(name, true);
    if (!st.ok()) {
      // Someone still holds it. Leave it registered (a pending destroy may still be using it) and stop
      // here; the registry's destructor reports what is left.
      TLOG_ERROR("bdev", "cannot destroy device '{}' at shutdown: {}", name, st);
      break;
    }
  }
  co_await tasks_.idle();
}

}  // namespace tern
