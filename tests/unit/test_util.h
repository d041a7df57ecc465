// Shared helpers for unit tests: reactors on the cores this machine allows, temporary directories,
// and running coroutines on a reactor from the test thread.
#pragma once

#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "bdev/registry.h"
#include "reactor/reactor_set.h"

namespace tern::test {

// `n` cores to run reactors on: distinct allowed cores while there are enough, then repeats.
inline std::vector<int> test_cores(unsigned n) {
  cpu_set_t cs;
  CPU_ZERO(&cs);
  sched_getaffinity(0, sizeof(cs), &cs);
  std::vector<int> allowed;
  for (int i = 0; i < CPU_SETSIZE; ++i)
    if (CPU_ISSET(i, &cs)) allowed.push_back(i);
  std::vector<int> out;
  for (unsigned i = 0; i < n; ++i) out.push_back(allowed[i % allowed.size()]);
  return out;
}

inline std::unique_ptr<ReactorSet> start_reactors(unsigned n, PollMode mode = PollMode::kAdaptive,
                                                  uint64_t drain_timeout_ns = 10'000'000'000ull) {
  ReactorSetOptions o;
  o.cores = test_cores(n);
  o.reactor.poll_mode = mode;
  o.reactor.drain_timeout_ns = drain_timeout_ns;
  auto s = ReactorSet::Start(o);
  if (!s.ok()) {
    ADD_FAILURE() << "cannot start reactors: " << s.status();
    return nullptr;
  }
  return std::move(*s);
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tern-test-XXXXXX").string();
    char* p = mkdtemp(tmpl.data());
    if (!p) throw std::runtime_error("mkdtemp failed");
    path_ = p;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  // Creates a file of `size` bytes (sparse).
  std::string make_file(const std::string& name, uint64_t size) const {
    std::string p = file(name);
    FILE* f = fopen(p.c_str(), "w");
    if (!f || ftruncate(fileno(f), off_t(size)) != 0) throw std::runtime_error("cannot create " + p);
    fclose(f);
    return p;
  }

 private:
  std::string path_;
};

// A reactor set plus a device registry, torn down in the right order.
class DeviceEnv {
 public:
  explicit DeviceEnv(unsigned reactors = 2, PollMode mode = PollMode::kAdaptive) {
    set = start_reactors(reactors, mode);
    registry = std::make_unique<BdevRegistry>(*set);
  }
  ~DeviceEnv() {
    if (set) {
      set->run_sync(0, [this]() -> Task<void> { co_await registry->destroy_all(); });
      registry.reset();
      set->stop();
    }
  }
  // Runs fn (plain or coroutine) on the primary reactor and returns its result.
  template <typename F>
  auto on_primary(F fn) {
    return set->run_sync(0, std::move(fn));
  }
  Result<Bdev*> create(const std::string& uri) {
    return set->run_sync(0, [&]() -> Task<Result<Bdev*>> { co_return co_await registry->create(uri); });
  }
  Status destroy(const std::string& name, bool force = false) {
    return set->run_sync(0, [&]() -> Task<Status> { co_return co_await registry->destroy(name, force); });
  }
  Result<std::unique_ptr<BdevDesc>> open(const std::string& name, bool writable = true) {
    return set->run_sync(0, [&] { return registry->open(name, writable); });
  }
  void close(std::unique_ptr<BdevDesc>& d) {
    set->run_sync(0, [&] { d.reset(); });
  }

  std::unique_ptr<ReactorSet> set;
  std::unique_ptr<BdevRegistry> registry;
};

// One request through `desc` on reactor `r`, waited for from the test thread. The channel is taken
// and released around the request.
inline Errc io_sync(ReactorSet& set, unsigned r, BdevDesc& desc, IoType t, void* buf = nullptr, uint64_t lba = 0,
                    uint64_t n = 0) {
  return set.run_sync(r, [&]() -> Task<Errc> {
    auto ch = ChannelRef::Get(desc);
    if (!ch.ok()) co_return ch.code();
    switch (t) {
      case IoType::kRead: co_return co_await ch->read(buf, lba, n);
      case IoType::kWrite: co_return co_await ch->write(buf, lba, n);
      case IoType::kFlush: co_return co_await ch->flush();
      case IoType::kUnmap: co_return co_await ch->unmap(lba, n);
      case IoType::kWriteZeroes: co_return co_await ch->write_zeroes(lba, n);
      case IoType::kReset: co_return co_await ch->reset_device();
    }
    co_return Errc::kInval;
  });
}

// Fills `n` bytes with a pattern derived from `seed`.
inline void fill(uint8_t* p, size_t n, uint64_t seed) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    p[i] = uint8_t(s);
  }
}

}  // namespace tern::test
