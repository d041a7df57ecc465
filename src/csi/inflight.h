// At most one call per volume (or snapshot) at a time: a second call for the same object while the first
// runs is answered ABORTED ("an operation for this volume is already in progress"), as the CSI
// specification asks; the CO retries it later. Threads: any (a mutex; held only to test and set).
#pragma once

#include <mutex>
#include <set>
#include <string>

namespace tern::csi {

class InFlight {
 public:
  class Guard {
   public:
    Guard(InFlight* f, std::string key) : f_(f), key_(std::move(key)) {}
    Guard(Guard&& o) noexcept : f_(o.f_), key_(std::move(o.key_)) { o.f_ = nullptr; }
    Guard(const Guard&) = delete;
    ~Guard() {
      if (f_) f_->release(key_);
    }
    explicit operator bool() const { return f_ != nullptr; }

   private:
    InFlight* f_;
    std::string key_;
  };

  // A held guard, or an empty one when `key` is taken.
  Guard try_take(const std::string& key) {
    std::lock_guard l(mu_);
    if (!keys_.insert(key).second) return Guard(nullptr, {});
    return Guard(this, key);
  }

 private:
  void release(const std::string& key) {
    std::lock_guard l(mu_);
    keys_.erase(key);
  }
  std::mutex mu_;
  std::set<std::string> keys_;
};

}  // namespace tern::csi
