// The pool against a model: random operations (replicas thin and thick, writes, unmaps, snapshots,
// clones, deletes, resizes) with exports, crashes and imports in between, every object's contents and
// the space accounting checked against an in-memory model; and a scripted workload over all of it with
// a power cut at every device write in turn.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "bdev/fault_bdevs.h"
#include "pool/state.h"
#include "pool_env.h"

namespace tern::pool {
namespace {

using namespace test_env;

constexpr uint64_t kCluster = kMiB;
constexpr uint64_t kBlock = 4096;

struct Obj {
  Uuid uuid;
  bool snapshot = false;
  std::vector<uint8_t> data;
};
using Model = std::map<std::string, Obj>;  // the objects a user sees (discarded snapshots are not)

// Reads every visible object of the pool.
Model read_pool(PoolFixture& t) {
  Model m;
  for (const ReplicaMeta& r : t.pool->ListReplicas()) {
    if (r.discarded) continue;
    Obj o{r.uuid, r.snapshot, {}};
    auto d = t.expose_and_open(r.uuid);
    if (!d) continue;
    o.data = t.read(*d, 0, r.size);
    t.env.close(d);
    m[r.name] = std::move(o);
  }
  return m;
}

// Clusters the objects own, as the space used must be.
uint64_t owned_bytes(PoolFixture& t) {
  uint64_t n = 0;
  for (const ReplicaMeta& r : t.pool->ListReplicas()) n += r.allocated_clusters() * kCluster;
  return n;
}

std::string diff(const Model& want, const Model& got) {
  for (auto& [name, o] : want) {
    auto it = got.find(name);
    if (it == got.end()) return "missing " + name;
    if (it->second.snapshot != o.snapshot) return name + ": snapshot flag differs";
    if (it->second.data.size() != o.data.size()) {
      return fmt::format("{}: {} bytes, want {}", name, it->second.data.size(), o.data.size());
    }
    if (it->second.data == o.data) continue;
    for (size_t i = 0; i < o.data.size(); ++i) {
      if (it->second.data[i] != o.data[i]) return fmt::format("{}: byte {} is {}, want {}", name, i, it->second.data[i], o.data[i]);
    }
  }
  for (auto& [name, o] : got) {
    if (!want.count(name)) return "unexpected " + name;
  }
  return "";
}

class Driver {
 public:
  explicit Driver(PoolFixture& t) : t_(t) {}
  ~Driver() { close_all(); }

  BdevDesc* open(const std::string& name, Model& m) {
    auto it = open_.find(name);
    if (it != open_.end()) return it->second.get();
    auto d = t_.expose_and_open(m.at(name).uuid);
    BdevDesc* p = d.get();
    if (d) open_[name] = std::move(d);
    return p;
  }
  void close(const std::string& name) {
    auto it = open_.find(name);
    if (it == open_.end()) return;
    t_.env.close(it->second);
    open_.erase(it);
  }
  void close_all() {
    while (!open_.empty()) close(open_.begin()->first);
  }

 private:
  PoolFixture& t_;
  std::map<std::string, std::unique_ptr<BdevDesc>> open_;
};

// After a request that failed (a full pool), each block of the range holds the old or the new data;
// the model takes what the device holds.
void adopt(PoolFixture& t, BdevDesc& d, Obj& o, uint64_t off, uint64_t len, const std::vector<uint8_t>& want) {
  auto got = t.read(d, off, len);
  for (uint64_t b = 0; b < len; b += kBlock) {
    const bool old_ok = std::equal(got.begin() + b, got.begin() + b + kBlock, o.data.begin() + off + b);
    const bool new_ok = std::equal(got.begin() + b, got.begin() + b + kBlock, want.begin() + b);
    EXPECT_TRUE(old_ok || new_ok) << "a failed request left block " << (off + b) / kBlock << " in neither state";
  }
  std::copy(got.begin(), got.end(), o.data.begin() + off);
}

TEST(PoolModel, RandomOperationsWithRestarts) {
  for (uint64_t seed : {1, 2, 3}) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    PoolFixture t(2, "malloc:///d0?size_mb=48", "d0", kCluster);
    std::mt19937_64 rng(seed);
    auto pick = [&](uint64_t n) { return n ? rng() % n : 0; };
    Model m;
    Driver io(t);
    int names = 0, restarts = 0, nospace = 0;
    auto any = [&](bool writable) -> std::string {
      std::vector<std::string> c;
      for (auto& [n, o] : m) {
        if (!writable || !o.snapshot) c.push_back(n);
      }
      return c.empty() ? "" : c[pick(c.size())];
    };
    for (int step = 0; step < 250; ++step) {
      const uint64_t op = pick(100);
      if (op < 10 || m.empty()) {  // create
        const bool thin = pick(3) != 0;
        const uint64_t size = (1 + pick(8)) * 512 * 1024;
        const std::string name = fmt::format("r{}", names++);
        auto r = t.try_replica(name, size, thin);
        if (!r.ok()) {
          ASSERT_EQ(r.code(), Errc::kNoSpc) << r.status();
          continue;
        }
        m[name] = Obj{r->uuid, false, std::vector<uint8_t>(size, 0)};
      } else if (op < 45) {  // write
        const std::string n = any(true);
        if (n.empty()) continue;
        Obj& o = m[n];
        const uint64_t blocks = o.data.size() / kBlock;
        const uint64_t at = pick(blocks), len = std::min<uint64_t>(1 + pick(160), blocks - at) * kBlock;
        BdevDesc* d = io.open(n, m);
        ASSERT_TRUE(d);
        auto data = pattern(len, rng());
        Errc e = t.write(*d, at * kBlock, data.data(), len, unsigned(pick(2)));
        if (e == Errc::kOk) {
          std::copy(data.begin(), data.end(), o.data.begin() + at * kBlock);
        } else {
          ASSERT_EQ(e, Errc::kNoSpc);
          ++nospace;
          adopt(t, *d, o, at * kBlock, len, data);
        }
      } else if (op < 55) {  // unmap or write-zeroes, often whole clusters
        const std::string n = any(true);
        if (n.empty()) continue;
        Obj& o = m[n];
        uint64_t off, len;
        if (pick(2)) {
          off = pick(o.data.size() / kCluster + 1) * kCluster;
          len = std::min<uint64_t>((1 + pick(2)) * kCluster, o.data.size() - std::min(off, o.data.size()));
        } else {
          off = pick(o.data.size() / kBlock) * kBlock;
          len = std::min<uint64_t>((1 + pick(64)) * kBlock, o.data.size() - off);
        }
        if (len == 0) continue;
        BdevDesc* d = io.open(n, m);
        Errc e = t.op(*d, pick(2) ? IoType::kUnmap : IoType::kWriteZeroes, off, len, unsigned(pick(2)));
        std::vector<uint8_t> zeros(len, 0);
        if (e == Errc::kOk) {
          std::fill(o.data.begin() + off, o.data.begin() + off + len, 0);
        } else {
          ASSERT_EQ(e, Errc::kNoSpc);  // a partial unmap of an inherited cluster copies it first
          adopt(t, *d, o, off, len, zeros);
        }
      } else if (op < 63) {  // snapshot
        const std::string n = any(true);
        if (n.empty()) continue;
        const std::string name = fmt::format("s{}", names++);
        auto s = t.snapshot(m[n].uuid, name);
        ASSERT_TRUE(s.ok()) << s.status();
        m[name] = Obj{s->uuid, true, m[n].data};
      } else if (op < 70) {  // clone
        std::vector<std::string> snaps;
        for (auto& [n, o] : m) {
          if (o.snapshot) snaps.push_back(n);
        }
        if (snaps.empty()) continue;
        const std::string& s = snaps[pick(snaps.size())];
        const std::string name = fmt::format("c{}", names++);
        auto c = t.clone(m[s].uuid, name);
        ASSERT_TRUE(c.ok()) << c.status();
        m[name] = Obj{c->uuid, false, m[s].data};
      } else if (op < 82) {  // destroy
        const std::string n = any(false);
        io.close(n);
        Status s = t.destroy(m[n].uuid);
        ASSERT_TRUE(s.ok()) << s;
        m.erase(n);
      } else if (op < 92) {  // resize
        const std::string n = any(true);
        if (n.empty()) continue;
        io.close(n);
        const uint64_t size = (1 + pick(8)) * 512 * 1024;
        auto r = t.resize(m[n].uuid, size, true);
        if (!r.ok()) {
          ASSERT_EQ(r.code(), Errc::kNoSpc) << r.status();
          continue;
        }
        m[n].data.resize(size, 0);
      } else {  // restart: a clean export, or a crash (every change so far was acknowledged: all of it stays)
        io.close_all();
        ++restarts;
        if (pick(2)) {
          ASSERT_TRUE(t.export_pool().ok());
        } else {
          t.crash();
        }
        Status s = t.import();
        ASSERT_TRUE(s.ok()) << s;
      }
      // Check one object each step, everything every 25 steps.
      if (step % 25 == 24) {
        io.close_all();
        std::string d = diff(m, read_pool(t));
        ASSERT_EQ(d, "") << "at step " << step;
        EXPECT_GE(t.pool->stats().used, owned_bytes(t));
      } else if (!m.empty()) {  // a window of up to 256 KiB of one object
        const std::string n = any(false);
        BdevDesc* d = io.open(n, m);
        ASSERT_TRUE(d);
        const std::vector<uint8_t>& want = m[n].data;
        const uint64_t at = pick(want.size() / kBlock) * kBlock, len = std::min<uint64_t>(want.size() - at, 256 * 1024);
        auto got = t.read(*d, at, len);
        ASSERT_TRUE(std::equal(got.begin(), got.end(), want.begin() + at)) << n << " at step " << step;
      }
    }
    io.close_all();
    ASSERT_TRUE(t.export_pool().ok());
    auto rep = t.env.on_primary([&]() -> Task<Result<PoolReport>> { co_return co_await Pool::Inspect(*t.env.registry, "d0"); });
    ASSERT_TRUE(rep.ok()) << rep.status();
    ASSERT_TRUE(t.import().ok());
    EXPECT_EQ(diff(m, read_pool(t)), "");
    EXPECT_EQ(t.pool->stats().used, owned_bytes(t)) << "clusters leaked";
    RecordProperty("restarts", restarts);
    RecordProperty("nospace", nospace);
  }
}

// A scripted workload over every kind of change, cut at each device write in turn (keeping none, some
// or all unflushed blocks). After import: every acknowledged change is there, the one in progress is
// either there or not, flushed data reads back, and the space used is what the objects own.
struct Step {
  std::string what;
  std::function<bool(PoolFixture&, Driver&, Model&)> run;  // false: not acknowledged (power is off)
  uint64_t write_obj_off = 0, write_len = 0;                // data the step writes (may be torn)
};

std::vector<Step> script() {
  std::vector<Step> s;
  auto create = [](std::string n, uint64_t size, bool thin) {
    return Step{"create " + n, [n, size, thin](PoolFixture& t, Driver&, Model& m) {
                  auto r = t.try_replica(n, size, thin);
                  if (!r.ok()) return false;
                  m[n] = Obj{r->uuid, false, std::vector<uint8_t>(size, 0)};
                  return true;
                }};
  };
  auto write = [](std::string n, uint64_t off, uint64_t len, uint64_t seed) {
    return Step{fmt::format("write {} at {}", n, off),
                [=](PoolFixture& t, Driver& io, Model& m) {
                  BdevDesc* d = io.open(n, m);
                  auto data = pattern(len, seed);
                  if (!d || t.write(*d, off, data.data(), len) != Errc::kOk) return false;
                  if (t.op(*d, IoType::kFlush, 0, 0) != Errc::kOk) return false;
                  std::copy(data.begin(), data.end(), m[n].data.begin() + off);
                  return true;
                },
                off, len};
  };
  auto unmap = [](std::string n, uint64_t off, uint64_t len) {
    return Step{fmt::format("unmap {} at {}", n, off),
                [=](PoolFixture& t, Driver& io, Model& m) {
                  BdevDesc* d = io.open(n, m);
                  if (!d || t.op(*d, IoType::kUnmap, off, len) != Errc::kOk) return false;
                  if (t.op(*d, IoType::kFlush, 0, 0) != Errc::kOk) return false;
                  std::fill(m[n].data.begin() + off, m[n].data.begin() + off + len, 0);
                  return true;
                },
                off, len};
  };
  auto snap = [](std::string of, std::string n) {
    return Step{"snapshot " + n, [=](PoolFixture& t, Driver&, Model& m) {
                  auto r = t.snapshot(m[of].uuid, n);
                  if (!r.ok()) return false;
                  m[n] = Obj{r->uuid, true, m[of].data};
                  return true;
                }};
  };
  auto clone = [](std::string of, std::string n) {
    return Step{"clone " + n, [=](PoolFixture& t, Driver&, Model& m) {
                  auto r = t.clone(m[of].uuid, n);
                  if (!r.ok()) return false;
                  m[n] = Obj{r->uuid, false, m[of].data};
                  return true;
                }};
  };
  auto destroy = [](std::string n) {
    return Step{"destroy " + n, [=](PoolFixture& t, Driver& io, Model& m) {
                  io.close(n);
                  if (!t.destroy(m[n].uuid).ok()) return false;
                  m.erase(n);
                  return true;
                }};
  };
  auto resize = [](std::string n, uint64_t size) {
    return Step{fmt::format("resize {} to {}", n, size), [=](PoolFixture& t, Driver& io, Model& m) {
                  io.close(n);
                  if (!t.resize(m[n].uuid, size, true).ok()) return false;
                  m[n].data.resize(size, 0);
                  return true;
                }};
  };
  s.push_back(create("r1", 3 * kMiB, true));
  s.push_back(create("r2", 2 * kMiB, false));
  s.push_back(write("r1", 0, 1536 * 1024, 1));
  s.push_back(write("r2", 512 * 1024, kMiB, 2));
  s.push_back(snap("r1", "s1"));
  s.push_back(write("r1", kMiB, 8192, 3));  // copy-on-write
  s.push_back(clone("s1", "c1"));
  s.push_back(write("c1", 2 * kMiB, 4096, 4));
  s.push_back(unmap("r1", 0, kMiB));     // hides an inherited cluster
  s.push_back(unmap("r2", 0, kMiB));     // zeroes a thick cluster
  s.push_back(unmap("c1", 2 * kMiB, kMiB));  // releases a thin cluster
  s.push_back(resize("r1", 4 * kMiB + 512 * 1024));
  s.push_back(destroy("s1"));  // two children: discarded
  s.push_back(destroy("c1"));  // the discarded snapshot merges into r1
  s.push_back(write("r1", 4 * kMiB, 4096, 5));
  s.push_back(Step{"export and import", [](PoolFixture& t, Driver& io, Model&) {
                     io.close_all();
                     if (!t.export_pool().ok()) return false;
                     return t.import().ok();
                   }});
  s.push_back(snap("r2", "s2"));
  s.push_back(destroy("r2"));
  s.push_back(resize("r1", 2 * kMiB));
  s.push_back(write("r1", 0, 2 * kMiB, 6));
  return s;
}

TEST(PoolModel, PowerCutAtEveryWriteOfAScriptedWorkload) {
  const std::vector<Step> steps = script();
  uint64_t total = 0;
  Model final_model;
  {
    PoolFixture t(1, "malloc:///d0?size_mb=32", "pc", kCluster, false);
    ASSERT_TRUE(t.env.create("powercut:///pc?base=d0").ok());
    ASSERT_TRUE(t.create(kCluster).ok());
    Driver io(t);
    for (auto& st : steps) ASSERT_TRUE(st.run(t, io, final_model)) << st.what;
    io.close_all();
    EXPECT_EQ(diff(final_model, read_pool(t)), "");
    total = dynamic_cast<PowerCutBdev*>(t.env.registry->find("pc"))->events();
  }
  int checked = 0;
  for (uint64_t at = 0; at <= total; ++at) {
    for (double persist : {0.0, 0.5, 1.0}) {
      SCOPED_TRACE(::testing::Message() << "cut at event " << at << " of " << total << ", persist " << persist);
      PoolFixture t(1, "malloc:///d0?size_mb=32", "pc", kCluster, false);
      ASSERT_TRUE(t.env.create(fmt::format("powercut:///pc?base=d0&cut_at={}&persist={}&seed={}", at, persist, at + 7))
                      .ok());
      Model m;  // after `done` acknowledged steps: a step changes the model only once acknowledged
      size_t done = 0;
      bool created = t.create(kCluster).ok();
      if (created) {
        Driver io(t);
        for (; done < steps.size(); ++done) {
          if (!steps[done].run(t, io, m)) break;
        }
        io.close_all();
        t.crash();
      }
      ASSERT_TRUE(t.env.destroy("pc").ok());
      t.device = "d0";
      Status s = t.import();
      if (!s.ok()) {
        EXPECT_EQ(s.code(), Errc::kNoEnt) << s;
        EXPECT_FALSE(created) << "an acknowledged pool must import";
        continue;
      }
      ++checked;
      Model got = read_pool(t);
      // Every acknowledged object must be there, exactly; the step in progress (if any) may have
      // happened or not: its object may be missing, present, or (a write or unmap) torn per block in
      // its range; a resize keeps the common prefix.
      const Model& want = m;
      const Step* cur = done < steps.size() ? &steps[done] : nullptr;
      auto in_progress = [&](const std::string& name) {
        if (!cur) return false;
        const std::string w = cur->what + " ";
        return w.find(" " + name + " ") != std::string::npos;
      };
      std::string why;
      for (auto& [name, o] : want) {
        auto it = got.find(name);
        if (it == got.end()) {
          if (!in_progress(name)) why = "acknowledged object " + name + " lost";
          continue;
        }
        const std::vector<uint8_t>& g = it->second.data;
        if (!in_progress(name)) {
          if (g != o.data) why = fmt::format("{}: {}", name, diff(Model{{name, o}}, Model{{name, it->second}}));
          continue;
        }
        const uint64_t common = std::min(g.size(), o.data.size());
        for (uint64_t i = 0; i < common && why.empty(); ++i) {
          const bool torn_ok = cur->write_len && i >= cur->write_obj_off && i < cur->write_obj_off + cur->write_len;
          if (!torn_ok && g[i] != o.data[i]) why = fmt::format("{}: byte {} changed", name, i);
        }
      }
      for (auto& [name, o] : got) {
        if (!want.count(name) && !in_progress(name)) why = "unexpected object " + name;
      }
      const bool ok = why.empty();
      EXPECT_TRUE(ok) << why << " (after " << done << " acknowledged steps; in progress: "
                      << (done < steps.size() ? steps[done].what : "none") << ")";
      EXPECT_EQ(t.pool->stats().used, owned_bytes(t)) << "clusters leaked or owned twice";
    }
  }
  EXPECT_GT(checked, 100);
}

}  // namespace
}  // namespace tern::pool
