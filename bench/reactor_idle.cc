// reactor_idle: how much CPU an idle reactor set burns. Starts reactors (optionally with open devices
// and channels on every core, as an engine with published volumes would have), waits, and reports
// each reactor thread's CPU use over the window from /proc/self/task/<tid>/stat.
//
//   reactor_idle --cores 0,1 --seconds 10 [--poll adaptive|busy] [--devices 4]
#include <sys/syscall.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "bdev/registry.h"
#include "common/log.h"
#include "reactor/reactor_set.h"

using namespace tern;

namespace {

// utime + stime of one thread, in clock ticks (fields 14 and 15 of /proc/.../stat).
uint64_t thread_ticks(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  size_t close = s.rfind(')');
  std::istringstream rest(s.substr(close + 2));
  std::string field;
  uint64_t ut = 0, st = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) ut = std::stoull(field);
    if (i == 15) st = std::stoull(field);
  }
  return ut + st;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"reactor_idle: CPU used by idle reactors, measured from /proc"};
  std::string cores = "0", poll = "adaptive";
  double seconds = 10;
  unsigned devices = 0;
  app.add_option("--cores", cores, "Reactor cores")->capture_default_str();
  app.add_option("--seconds", seconds, "Measurement window")->capture_default_str();
  app.add_option("--poll", poll, "adaptive or busy")->capture_default_str();
  app.add_option("--devices", devices, "RAM devices to create, each with an open channel on every reactor")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  (void)log::set_levels("warn");

  auto cl = parse_core_list(cores);
  if (!cl.ok()) {
    std::cerr << "reactor_idle: " << cl.status() << "\n";
    return 2;
  }
  ReactorSetOptions o;
  o.cores = *cl;
  o.reactor.poll_mode = poll == "busy" ? PollMode::kBusy : PollMode::kAdaptive;
  auto set = ReactorSet::Start(o);
  if (!set.ok()) {
    std::cerr << "reactor_idle: " << set.status() << "\n";
    return 2;
  }
  ReactorSet& rs = **set;
  BdevRegistry reg(rs);
  std::vector<std::unique_ptr<BdevDesc>> descs;
  std::vector<std::vector<ChannelRef>> chans(rs.size());
  for (unsigned i = 0; i < devices; ++i) {
    Status st = rs.run_sync(0, [&]() -> Task<Status> {
      auto b = co_await reg.create(fmt::format("malloc:///idle{}?size_mb=16", i));
      if (!b.ok()) co_return b.status();
      auto d = reg.open((*b)->name(), true);
      if (!d.ok()) co_return d.status();
      descs.push_back(std::move(*d));
      co_return Status::Ok();
    });
    if (!st.ok()) {
      std::cerr << "reactor_idle: " << st << "\n";
      return 2;
    }
    for (unsigned r = 0; r < rs.size(); ++r) {
      rs.run_sync(r, [&, r] { chans[r].push_back(std::move(*ChannelRef::Get(*descs.back()))); });
    }
  }
  std::vector<pid_t> tids;
  for (unsigned r = 0; r < rs.size(); ++r) tids.push_back(rs.run_sync(r, [] { return pid_t(syscall(SYS_gettid)); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let them settle into sleep
  std::vector<uint64_t> before;
  for (pid_t t : tids) before.push_back(thread_ticks(t));
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const double hz = double(sysconf(_SC_CLK_TCK));
  nlohmann::json per_core = nlohmann::json::array();
  double total = 0;
  for (size_t i = 0; i < tids.size(); ++i) {
    double pct = 100.0 * double(thread_ticks(tids[i]) - before[i]) / hz / seconds;
    per_core.push_back(pct);
    total += pct;
  }
  uint64_t sleeps = 0;
  for (unsigned r = 0; r < rs.size(); ++r) sleeps += rs.run_sync(r, [] { return Reactor::current()->counters().sleeps; });
  for (unsigned r = 0; r < rs.size(); ++r) rs.run_sync(r, [&, r] { chans[r].clear(); });
  rs.run_sync(0, [&]() -> Task<void> {
    descs.clear();
    co_await reg.destroy_all();
  });
  rs.stop();
  nlohmann::json out = {{"poll", poll},   {"cores", *cl},          {"seconds", seconds},
                        {"devices", devices}, {"cpu_pct_per_core", per_core}, {"cpu_pct_total", total},
                        {"sleeps", sleeps}};
  std::cout << out.dump() << std::endl;
  return 0;
}
