// ioperf: drive any device URI through the device layer and report IOPS, bandwidth, latency and CPU.
// Run `ioperf --help` for the options; docs/benchmarks.md shows it next to fio.
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "common/log.h"
#include "common/units.h"
#include "job.h"
#include "reactor/reactor_set.h"

using namespace tern;
using namespace tern::ioperf;

namespace {

nlohmann::json op_json(const OpResult& r, double secs) {
  auto us = [](uint64_t ns) { return double(ns) / 1000.0; };
  return {{"ops", r.ops},
          {"bytes", r.bytes},
          {"errors", r.errors},
          {"iops", secs > 0 ? double(r.ops) / secs : 0},
          {"mib_s", secs > 0 ? double(r.bytes) / secs / 1048576.0 : 0},
          {"mb_s", secs > 0 ? double(r.bytes) / secs / 1e6 : 0},
          {"lat_us",
           {{"mean", r.latency.mean() / 1000.0},
            {"min", us(r.latency.min())},
            {"p50", us(r.latency.percentile(0.50))},
            {"p99", us(r.latency.percentile(0.99))},
            {"p99_9", us(r.latency.percentile(0.999))},
            {"max", us(r.latency.max())}}}};
}

void print_row(const char* name, const OpResult& r, double secs) {
  if (r.ops == 0) return;
  auto us = [](double ns) { return ns / 1000.0; };
  fmt::print("  {:<6} {:>10.0f} {:>9.1f} {:>9.1f} {:>9.1f} {:>9.1f} {:>9.1f} {:>9.1f} {:>8}\n", name,
             double(r.ops) / secs, double(r.bytes) / secs / 1048576.0, us(r.latency.mean()),
             us(double(r.latency.percentile(0.5))), us(double(r.latency.percentile(0.99))),
             us(double(r.latency.percentile(0.999))), us(double(r.latency.max())), r.errors);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "ioperf: drives a device (any device URI) through tern's device layer from pinned io_uring reactors and "
      "reports IOPS, bandwidth, latency percentiles and CPU per core.\n\n"
      "Examples:\n"
      "  ioperf --uri uring:///var/tmp/disk.img --rw randread --bs 4k --qd 32 --time 10s\n"
      "  ioperf --uri malloc:///m0?size_mb=256 --rw randwrite --qd 32 --cores 0,1 --json\n"
      "  ioperf --uri uring:///var/tmp/disk.img --rw randwrite --verify --ios 100000\n"
      "  ioperf --dev malloc:///m0?size_mb=64 --uri 'delay:///d0?base=m0&read_us=200' --rw randread --qd 1\n\n"
      "Device URIs: uring:///path (aio:///path), malloc:///name?size_mb=N, null:///name?size_mb=N,\n"
      "error:///name?base=DEV&rule=SPEC, delay:///name?base=DEV&read_us=N&write_us=N,\n"
      "nvmf://host:port/<subsystem NQN>?nsid=1&hdgst=1&ddgst=1 (NVMe/TCP).\n"
      "Exit status: 0 success; 1 I/O error or verify mismatch; 2 bad arguments or device setup failure."};
  app.set_help_flag("-h,--help", "Print this help and exit");
  std::string uri, rw = "randread", bs = "4k", cores = "0", time = "10s", ramp = "0", offset = "0", size = "0",
              poll = "adaptive", log_level = "warn";
  std::vector<std::string> devs;
  unsigned qd = 1, mix = 50;
  uint64_t ios = 0, seed = 1, idle_spin_us = 20, await_spin_us = 250;
  bool verify = false, json = false, keep_going = false;
  std::string pool_dev, replica;
  auto* uri_opt = app.add_option("--uri", uri, "Device to drive (or --pool and --replica)");
  auto* pool_opt = app.add_option("--pool", pool_dev,
                                  "Drive a replica: the device (created by --dev) holding its pool, imported first and "
                                  "exported at the end");
  auto* replica_opt = app.add_option("--replica", replica, "Drive a replica: its name or UUID in the --pool");
  pool_opt->needs(replica_opt);
  replica_opt->needs(pool_opt);
  uri_opt->excludes(pool_opt);
  app.add_option("--dev", devs, "Extra device to create first, e.g. the base of an error:// or delay:// device (repeatable)");
  app.add_option("--rw", rw, "Workload: read, write, randread, randwrite, randrw, rw")->capture_default_str();
  app.add_option("--mix", mix, "randrw/rw: percentage of reads")->capture_default_str();
  app.add_option("--bs", bs, "Block size per request (512, 4k, 128k, 1m; multiple of the device block size)")->capture_default_str();
  app.add_option("--qd", qd, "Requests in flight per core")->capture_default_str();
  app.add_option("--cores", cores, "Reactor cores: list (0,1), range (0-3) or hex mask (0x3)")->capture_default_str();
  app.add_option("--time", time, "Run time (10s, 500ms, 2m); 0 = until --ios are done")->capture_default_str();
  app.add_option("--ios", ios, "Stop after this many requests in total (0 = no limit)")->capture_default_str();
  app.add_option("--ramp", ramp, "Warm-up time excluded from the figures")->capture_default_str();
  app.add_option("--offset", offset, "Start of the region to use (bytes, or 1g etc.)")->capture_default_str();
  app.add_option("--size", size, "Length of the region (0 = to the end of the device)")->capture_default_str();
  app.add_flag("--verify", verify,
               "Write a pattern carrying each sector's offset and a generation number, check every read of data "
               "written by this run, and read back everything written at the end");
  app.add_flag("--continue-on-error", keep_going, "Keep going after an I/O error (default: the core stops)");
  app.add_option("--seed", seed, "Random seed")->capture_default_str();
  app.add_option("--poll", poll, "Reactor polling: adaptive (sleep when idle) or busy (always spin)")->capture_default_str();
  app.add_option("--idle-spin-us", idle_spin_us, "Adaptive polling: idle time before a reactor sleeps")->capture_default_str();
  app.add_option("--await-spin-us", await_spin_us,
                 "Adaptive polling: idle time before a reactor sleeps while NVMe/TCP commands it sent are "
                 "unanswered (nvmf:// devices)")->capture_default_str();
  app.add_flag("--json", json, "Print one JSON object instead of the table");
  app.add_option("--log-level", log_level, "Log levels, e.g. warn or info,bdev=debug")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  auto usage_error = [](const Status& s) {
    fmt::print(stderr, "ioperf: {}\n", s.message().empty() ? s.ToString() : std::string(s.message()));
    return 2;
  };
  if (Status s = log::set_levels(log_level); !s.ok()) return usage_error(s);

  if (uri.empty() && pool_dev.empty()) return usage_error(Status(Errc::kInval, "--uri (or --pool and --replica) is required"));
  JobSpec spec;
  spec.uri = uri;
  spec.pool_device = pool_dev;
  spec.replica = replica;
  spec.extra_devices = devs;
  auto mode = parse_mode(rw);
  if (!mode.ok()) return usage_error(mode.status());
  spec.mode = *mode;
  spec.mix_read_pct = mix;
  auto bsv = parse_size(bs);
  if (!bsv.ok()) return usage_error(bsv.status().WithContext("--bs"));
  spec.bs = *bsv;
  spec.qd = qd;
  auto cl = parse_core_list(cores);
  if (!cl.ok()) return usage_error(cl.status().WithContext("--cores"));
  spec.cores = *cl;
  auto tv = parse_duration_ns(time);
  if (!tv.ok()) return usage_error(tv.status().WithContext("--time"));
  spec.time_ns = *tv;
  spec.ios = ios;
  auto rv = parse_duration_ns(ramp);
  if (!rv.ok()) return usage_error(rv.status().WithContext("--ramp"));
  spec.ramp_ns = *rv;
  auto ov = parse_size(offset);
  if (!ov.ok()) return usage_error(ov.status().WithContext("--offset"));
  spec.offset = *ov;
  auto sv = parse_size(size);
  if (!sv.ok()) return usage_error(sv.status().WithContext("--size"));
  spec.size = *sv;
  spec.verify = verify;
  spec.continue_on_error = keep_going;
  spec.seed = seed;
  if (poll == "adaptive") spec.poll_mode = PollMode::kAdaptive;
  else if (poll == "busy") spec.poll_mode = PollMode::kBusy;
  else return usage_error(Status::Errorf(Errc::kInval, "--poll must be adaptive or busy, not '{}'", poll));
  spec.idle_spin_ns = idle_spin_us * 1000;
  spec.await_spin_ns = await_spin_us * 1000;

  auto res = run_job(spec);
  if (!res.ok()) return usage_error(res.status());
  const JobResult& r = *res;
  const double secs = r.elapsed_s > 0 ? r.elapsed_s : 1e-9;
  OpResult all = r.read;
  all.merge(r.write);

  if (json) {
    nlohmann::json j = {{"uri", uri},
                        {"device", {{"name", r.device.name},
                                    {"product", r.device.product},
                                    {"block_size", r.device.block_size},
                                    {"num_blocks", r.device.num_blocks}}},
                        {"rw", mode_name(spec.mode)},
                        {"bs", spec.bs},
                        {"qd", spec.qd},
                        {"cores", spec.cores},
                        {"poll", poll},
                        {"elapsed_s", r.elapsed_s},
                        {"total", op_json(all, secs)},
                        {"read", op_json(r.read, secs)},
                        {"write", op_json(r.write, secs)},
                        {"cpu_pct", r.cpu_pct},
                        {"reactor_sleeps", r.sleeps},
                        {"reactor_awaiting_at_end", r.awaiting},
                        {"verify", {{"enabled", spec.verify}, {"checked_bytes", r.verified_bytes},
                                    {"mismatch", r.mismatch ? nlohmann::json(r.mismatch->describe(r.device.block_size)) : nlohmann::json()}}},
                        {"error", r.first_error ? nlohmann::json(*r.first_error) : nlohmann::json()},
                        {"ok", r.ok()}};
    std::cout << j.dump() << std::endl;
  } else {
    fmt::print("ioperf: {} ({}, {} x {} B)  {} bs={} qd={} cores={}  {:.2f} s\n", uri, r.device.product,
               r.device.num_blocks, r.device.block_size, mode_name(spec.mode), format_size(spec.bs), spec.qd, cores,
               r.elapsed_s);
    fmt::print("  {:<6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}\n", "op", "IOPS", "MiB/s", "mean us",
               "p50 us", "p99 us", "p99.9 us", "max us", "errors");
    print_row("read", r.read, secs);
    print_row("write", r.write, secs);
    if (r.read.ops && r.write.ops) print_row("total", all, secs);
    std::string cpu;
    for (size_t i = 0; i < r.cpu_pct.size(); ++i) cpu += fmt::format("{}core {}: {:.1f}%", i ? ", " : "", spec.cores[i], r.cpu_pct[i]);
    fmt::print("  cpu: {}\n", cpu);
    if (spec.verify) {
      fmt::print("  verify: {} checked, {}\n", format_size(r.verified_bytes),
                 r.mismatch ? "MISMATCH at " + r.mismatch->describe(r.device.block_size) : std::string("no mismatches"));
    }
    if (r.first_error) fmt::print("  error: {}\n", *r.first_error);
  }
  return r.ok() ? 0 : 1;
}
