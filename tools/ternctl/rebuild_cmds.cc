#include "rebuild_cmds.h"

#include <unistd.h>

#include <map>
#include <set>
#include <thread>

#include "engine_client.h"

namespace tern::ctl {

namespace {

struct RebuildArgs {
  std::string nexus, child, segment, rate;
  uint32_t concurrency = 0;
  bool watch = false;
  bool verify = false;
  double interval_s = 1;
};
RebuildArgs r;

std::string pct(const v1::Rebuild& b) {
  return b.total_bytes() ? fmt::format("{:.1f}%", 100.0 * double(b.done_bytes()) / double(b.total_bytes())) : "-";
}

std::string rate_cell(uint64_t bps) { return bps ? sz(bps) + "/s" : "-"; }

std::string eta_cell(const v1::Rebuild& b) {
  if (b.state() != v1::REBUILD_STATE_RUNNING || b.eta_ms() == 0) return "-";
  const uint64_t s = (b.eta_ms() + 999) / 1000;
  return s >= 3600 ? fmt::format("{}h{:02}m", s / 3600, s / 60 % 60) : s >= 60 ? fmt::format("{}m{:02}s", s / 60, s % 60)
                                                                               : fmt::format("{}s", s);
}

void jobs_table(const google::protobuf::RepeatedPtrField<v1::Rebuild>& jobs, const char* what) {
  print_rows<v1::Rebuild>({{"CHILD", [](auto& b) { return b.child_uuid(); }},
                           {"KIND", [](auto& b) { return b.kind(); }},
                           {"STATE", [](auto& b) { return std::string(rebuild_state_name(b.state())); }},
                           {"DONE", [](auto& b) { return pct(b); }},
                           {"DIRTY", [](auto& b) { return b.kind() == "partial" ? sz(b.dirty_bytes()) : std::string("-"); }},
                           {"COPIED", [](auto& b) { return sz(b.copied_bytes()); }},
                           {"OF", [](auto& b) { return sz(b.total_bytes()); }},
                           {"RATE", [](auto& b) { return rate_cell(b.bytes_per_s()); }},
                           {"LIMIT", [](auto& b) { return rate_cell(b.rate_limit()); }},
                           {"ETA", [](auto& b) { return eta_cell(b); }},
                           {"SOURCE", [](auto& b) { return b.source().empty() ? std::string("-") : b.source(); }},
                           {"ERROR", [](auto& b) { return b.error().empty() ? std::string("-") : b.error(); }}},
                          jobs, what);
}

int job_reply(const v1::Rebuild& b) {
  return show(b, [&] {
    fmt::print("rebuild of child {} of nexus {}: {} ({}), {} of {}{}\n", b.child_uuid(), b.nexus_uuid(),
               rebuild_state_name(b.state()), b.kind(), sz(b.done_bytes()), sz(b.total_bytes()),
               b.error().empty() ? "" : fmt::format(": {}", b.error()));
    if (!b.reason().empty()) fmt::print("  {}\n", b.reason());
  });
}

std::string bar(const v1::Rebuild& b, int width) {
  const double f = b.total_bytes() ? double(b.done_bytes()) / double(b.total_bytes()) : 0;
  const int full = int(f * width);
  return "[" + std::string(full, '#') + std::string(width - full, '.') + "]";
}

// Polls ListRebuilds until every job that was running has ended; a bar per job on a terminal, a line per
// change otherwise. 0 when every job watched completed.
int watch(const std::string& nexus) {
  const bool tty = isatty(STDOUT_FILENO);
  std::set<std::string> watched;
  std::map<std::string, std::string> last_line;
  int lines_drawn = 0;
  for (;;) {
    v1::NexusRef ref;
    ref.set_uuid(nexus);
    v1::ListRebuildsReply l;
    if (int rc = call(&v1::NexusService::Stub::ListRebuilds, ref, &l)) return rc;
    for (auto& b : l.current()) watched.insert(b.child_uuid());
    if (watched.empty()) {
      fmt::print("no rebuild is running on nexus {}\n", nexus);
      return 0;
    }
    std::vector<std::string> lines;
    for (auto& b : l.current()) {
      lines.push_back(fmt::format("{} {} {:>6}  {} / {}  {}  ETA {}  {}", b.child_uuid().substr(0, 8), bar(b, 30), pct(b),
                                  sz(b.done_bytes()), sz(b.total_bytes()), rate_cell(b.bytes_per_s()), eta_cell(b),
                                  rebuild_state_name(b.state())));
    }
    if (tty) {
      if (lines_drawn) fmt::print("\x1b[{}A", lines_drawn);
      for (auto& s : lines) fmt::print("\x1b[2K{}\n", s);
      lines_drawn = int(lines.size());
    } else {
      for (auto& b : l.current()) {
        std::string s = fmt::format("{} {} {} of {}", b.child_uuid(), rebuild_state_name(b.state()), pct(b), sz(b.total_bytes()));
        if (last_line[b.child_uuid()] != s) fmt::print("{}\n", s);
        last_line[b.child_uuid()] = s;
      }
    }
    std::fflush(stdout);
    if (l.current().empty()) {
      // Every watched job ended: its result is the newest history entry for that child.
      int rc = 0;
      std::map<std::string, const v1::Rebuild*> ended;
      for (auto& b : l.history()) ended[b.child_uuid()] = &b;
      for (auto& c : watched) {
        auto it = ended.find(c);
        if (it == ended.end()) continue;
        const v1::Rebuild& b = *it->second;
        fmt::print("rebuild of {}: {} — {} copied in {:.1f} s{}\n", c, rebuild_state_name(b.state()), sz(b.copied_bytes()),
                   double(b.elapsed_ms()) / 1000, b.error().empty() ? "" : fmt::format(" ({})", b.error()));
        if (b.state() != v1::REBUILD_STATE_COMPLETED) rc = 1;
      }
      return rc;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(int64_t(r.interval_s * 1000)));
  }
}

}  // namespace

void add_rebuild_commands(CLI::App* nexus, std::function<int()>* run) {
  auto* rb = nexus->add_subcommand(
      "rebuild",
      "Rebuilds: copying the volume to an out-of-sync child while host I/O goes on (a nexus starts one by itself "
      "for each child that joins or comes back, unless created with --no-auto-rebuild)");
  rb->require_subcommand(1);
  auto* start = rb->add_subcommand("start", "Start rebuilding an out-of-sync child (a job running already: shown as is)");
  start->add_option("nexus", r.nexus, "The nexus UUID")->required();
  start->add_option("child", r.child, "The child's UUID")->required();
  start->add_option("--segment", r.segment, "Bytes per copy request, 4KiB..16MiB (default 1MiB)");
  start->add_option("--concurrency", r.concurrency, "Segments copied at once, 1..16 (default 2)");
  start->add_option("--rate", r.rate, "At most this many bytes per second (100MiB, 50MB/s; default: no limit)");
  start->add_flag("--verify", r.verify,
                  "Read every copied segment back from the child and compare it with the source (a mismatch fails "
                  "the rebuild and faults the child)");
  start->add_flag("--watch", r.watch, "Then show progress until it ends");
  start->callback([run] {
    *run = [] {
      v1::StartRebuildRequest q;
      q.set_uuid(r.nexus);
      q.set_child_uuid(r.child);
      if (!r.segment.empty() || r.concurrency || !r.rate.empty() || r.verify) {
        auto* s = q.mutable_settings();
        if (!r.segment.empty()) {
          auto v = size_arg(r.segment);
          if (!v.ok()) return bad_arg(v.status());
          s->set_segment_bytes(*v);
        }
        s->set_concurrency(r.concurrency);
        auto rate = rate_arg(r.rate);
        if (!rate.ok()) return bad_arg(rate.status());
        s->set_rate_bytes_per_s(*rate);
        s->set_verify(r.verify);
      }
      v1::Rebuild b;
      if (int rc = call(&v1::NexusService::Stub::StartRebuild, q, &b)) return rc;
      if (r.watch) return watch(r.nexus);
      return job_reply(b);
    };
  });
  for (auto [verb, help] : {std::pair{"pause", "Pause a child's rebuild (at its next window of segments)"},
                            std::pair{"resume", "Resume a paused rebuild"},
                            std::pair{"stop", "Stop a child's rebuild; the child stays out of sync (written, not read)"}}) {
    auto* c = rb->add_subcommand(verb, help);
    c->add_option("nexus", r.nexus, "The nexus UUID")->required();
    c->add_option("child", r.child, "The child's UUID")->required();
    std::string v = verb;
    c->callback([run, v] {
      *run = [v] {
        v1::ChildRef q;
        q.set_uuid(r.nexus);
        q.set_child_uuid(r.child);
        v1::Rebuild b;
        auto m = v == "pause" ? &v1::NexusService::Stub::PauseRebuild
                 : v == "resume" ? &v1::NexusService::Stub::ResumeRebuild
                                 : &v1::NexusService::Stub::StopRebuild;
        if (int rc = call(m, q, &b)) return rc;
        return job_reply(b);
      };
    });
  }
  auto* rate = rb->add_subcommand("rate", "Change a running rebuild's rate limit");
  rate->add_option("nexus", r.nexus, "The nexus UUID")->required();
  rate->add_option("child", r.child, "The child's UUID")->required();
  rate->add_option("rate", r.rate, "Bytes per second (100MiB, 50MB/s), or 0 for no limit")->required();
  rate->callback([run] {
    *run = [] {
      auto v = rate_arg(r.rate);
      if (!v.ok()) return bad_arg(v.status());
      v1::SetRebuildRateRequest q;
      q.set_uuid(r.nexus);
      q.set_child_uuid(r.child);
      q.set_rate_bytes_per_s(*v);
      v1::Rebuild b;
      if (int rc = call(&v1::NexusService::Stub::SetRebuildRate, q, &b)) return rc;
      return job_reply(b);
    };
  });
  auto* status = rb->add_subcommand("status", "Rebuilds running or paused on a nexus (--watch: progress bars until they end)");
  status->add_option("nexus", r.nexus, "The nexus UUID")->required();
  status->add_flag("--watch", r.watch, "Show progress until every running rebuild has ended (exit 1 if one did not complete)");
  status->add_option("--interval", r.interval_s, "Seconds between updates with --watch")->capture_default_str();
  status->callback([run] {
    *run = [] {
      if (r.watch) return watch(r.nexus);
      v1::NexusRef q;
      q.set_uuid(r.nexus);
      v1::ListRebuildsReply l;
      if (int rc = call(&v1::NexusService::Stub::ListRebuilds, q, &l)) return rc;
      return show(l, [&] { jobs_table(l.current(), "rebuilds running"); });
    };
  });
  auto* hist = rb->add_subcommand("history", "Rebuilds that ended on a nexus, the last 64 (kept next to its record in etcd: they outlive restarts)");
  hist->add_option("nexus", r.nexus, "The nexus UUID")->required();
  hist->callback([run] {
    *run = [] {
      v1::NexusRef q;
      q.set_uuid(r.nexus);
      v1::ListRebuildsReply l;
      if (int rc = call(&v1::NexusService::Stub::ListRebuilds, q, &l)) return rc;
      return show(l, [&] { jobs_table(l.history(), "rebuilds that ended"); });
    };
  });
}

}  // namespace tern::ctl
