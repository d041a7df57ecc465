// How ternctl's engine commands talk to the io-engine: the global options (endpoint, output format,
// timeout), one gRPC call with its error printed and mapped to an exit code (engine_cmds.h lists them),
// and printing a reply as a table or as JSON/YAML. Shared by the command groups (engine_cmds.cc,
// rebuild_cmds.cc).
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>

#include "common/result.h"
#include "common/units.h"
#include "output.h"
#include "tern/engine/v1/bdev.grpc.pb.h"
#include "tern/engine/v1/nexus.grpc.pb.h"
#include "tern/engine/v1/nvmf.grpc.pb.h"
#include "tern/engine/v1/pool.grpc.pb.h"
#include "tern/engine/v1/replica.grpc.pb.h"
#include "tern/engine/v1/snapshot.grpc.pb.h"

namespace tern::ctl {

namespace v1 = ::tern::engine::v1;

struct Globals {
  std::string engine = "127.0.0.1:10124";
  std::string output = "table";
  double timeout_s = 60;
  Format format() const { return output == "json" ? Format::kJson : output == "yaml" ? Format::kYaml : Format::kTable; }
};
inline Globals g;

inline int exit_code(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK:
      return 0;
    case grpc::StatusCode::NOT_FOUND:
      return 3;
    case grpc::StatusCode::ALREADY_EXISTS:
      return 4;
    case grpc::StatusCode::FAILED_PRECONDITION:
      return 5;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return 6;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return 7;
    case grpc::StatusCode::DATA_LOSS:
      return 8;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
      return 9;
    default:
      return 1;
  }
}

// What to run to see what exists, for a NOT_FOUND from this service.
template <typename Stub>
const char* list_hint() {
  if constexpr (std::is_same_v<Stub, v1::PoolService::Stub>) return " (see 'ternctl pool list')";
  if constexpr (std::is_same_v<Stub, v1::ReplicaService::Stub>) return " (see 'ternctl replica list --all')";
  if constexpr (std::is_same_v<Stub, v1::SnapshotService::Stub>) return " (see 'ternctl replica list --all')";
  if constexpr (std::is_same_v<Stub, v1::BdevService::Stub>) return " (see 'ternctl bdev list')";
  if constexpr (std::is_same_v<Stub, v1::NvmfService::Stub>) return " (see 'ternctl nvmf subsystems')";
  if constexpr (std::is_same_v<Stub, v1::NexusService::Stub>) return " (see 'ternctl nexus list')";
  return "";
}

inline std::shared_ptr<grpc::Channel> channel() {
  static std::shared_ptr<grpc::Channel> ch = grpc::CreateChannel(g.engine, grpc::InsecureChannelCredentials());
  return ch;
}

// One call: prints the error (and returns its exit code) or leaves the reply in `resp`.
template <typename Stub, typename Req, typename Resp>
int call(grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*), const Req& req, Resp* resp) {
  auto stub = std::decay_t<decltype(*std::declval<Stub*>())>(channel());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(int64_t(g.timeout_s * 1000)));
  grpc::Status s = (stub.*method)(&ctx, req, resp);
  if (s.ok()) return 0;
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE && s.error_message().find("failed to connect") != std::string::npos) {
    fmt::print(stderr, "ternctl: cannot reach the io-engine at {} (is it running? choose another with --engine or "
                       "TERN_ENGINE)\n", g.engine);
  } else if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    fmt::print(stderr, "ternctl: no answer from the io-engine at {} within {} s (raise --timeout; the operation may "
                       "still complete)\n", g.engine, g.timeout_s);
  } else {
    const char* hint = s.error_code() == grpc::StatusCode::NOT_FOUND    ? list_hint<Stub>()
                       : s.error_code() == grpc::StatusCode::DATA_LOSS ? " (inspect the disk with 'ternctl offline pool check' once it is exported)"
                                                                       : "";
    fmt::print(stderr, "ternctl: {}{}\n", s.error_message(), hint);
  }
  return exit_code(s.error_code());
}

// Prints the reply in the chosen format; tables via `table`.
template <typename Msg>
int show(const Msg& m, const std::function<void()>& table) {
  if (g.format() == Format::kTable) {
    table();
  } else {
    print_message(m, g.format());
  }
  return 0;
}

inline std::string sz(uint64_t b) { return format_size(b); }

inline Result<uint64_t> size_arg(const std::string& s) {
  auto v = parse_size(s);
  if (!v.ok()) return Status::Errorf(Errc::kInval, "size '{}': {}", s, v.status().message());
  return v;
}


// A rate in bytes per second: a size ("100MiB", "50MB/s"), or 0 / none / unlimited for no limit.
inline Result<uint64_t> rate_arg(const std::string& s) {
  if (s.empty() || s == "0" || s == "none" || s == "unlimited") return uint64_t{0};
  std::string v = s;
  if (v.size() > 2 && v.substr(v.size() - 2) == "/s") v.resize(v.size() - 2);
  auto n = size_arg(v);
  if (!n.ok()) return Status::Errorf(Errc::kInval, "rate '{}': bytes per second (100MiB, 50MB/s), or 0 for no limit", s);
  return n;
}

inline const char* rebuild_state_name(v1::RebuildState s) {
  switch (s) {
    case v1::REBUILD_STATE_RUNNING: return "running";
    case v1::REBUILD_STATE_PAUSED: return "paused";
    case v1::REBUILD_STATE_STOPPED: return "stopped";
    case v1::REBUILD_STATE_COMPLETED: return "completed";
    case v1::REBUILD_STATE_FAILED: return "failed";
    default: return "unknown";
  }
}

// A bad command-line value: the message, exit code 2.
inline int bad_arg(const Status& s) {
  fmt::print(stderr, "ternctl: {}\n", s.message());
  return 2;
}

}  // namespace tern::ctl
