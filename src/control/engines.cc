#include "control/engines.h"

namespace tern::control {

Status from_grpc(const std::string& endpoint, const grpc::Status& s) {
  if (s.ok()) return Status::Ok();
  Errc e = Errc::kIo;
  switch (s.error_code()) {
    case grpc::StatusCode::NOT_FOUND: e = Errc::kNoEnt; break;
    case grpc::StatusCode::ALREADY_EXISTS: e = Errc::kExist; break;
    case grpc::StatusCode::FAILED_PRECONDITION: e = Errc::kBusy; break;
    case grpc::StatusCode::RESOURCE_EXHAUSTED: e = Errc::kNoSpc; break;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE: e = Errc::kInval; break;
    case grpc::StatusCode::DEADLINE_EXCEEDED: e = Errc::kTimedOut; break;
    case grpc::StatusCode::UNAVAILABLE: e = Errc::kConnRefused; break;
    case grpc::StatusCode::PERMISSION_DENIED: e = Errc::kAccess; break;
    case grpc::StatusCode::DATA_LOSS: e = Errc::kCorruption; break;
    case grpc::StatusCode::CANCELLED: e = Errc::kCanceled; break;
    default: break;
  }
  return Status::Errorf(e, "engine {}: {}", endpoint, s.error_message());
}

std::shared_ptr<grpc::Channel> Engines::channel(const std::string& endpoint) {
  auto it = channels_.find(endpoint);
  if (it != channels_.end()) return it->second;
  grpc::ChannelArguments args;
  // An engine that restarts is called again within a fraction of a second, not after gRPC's default
  // back-off (up to two minutes).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  auto ch = grpc::CreateCustomChannel(endpoint, grpc::InsecureChannelCredentials(), args);
  channels_[endpoint] = ch;
  return ch;
}

}  // namespace tern::control
