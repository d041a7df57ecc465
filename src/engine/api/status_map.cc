#include "engine/api/status_map.h"

namespace tern::engine {

grpc::StatusCode grpc_code(Errc e) {
  switch (e) {
    case Errc::kOk:
      return grpc::StatusCode::OK;
    case Errc::kInval:
    case Errc::kRange:
    case Errc::kFBig:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case Errc::kNoEnt:
    case Errc::kNoDev:
      return grpc::StatusCode::NOT_FOUND;
    case Errc::kExist:
      return grpc::StatusCode::ALREADY_EXISTS;
    case Errc::kNoSpc:
      return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case Errc::kBusy:
    case Errc::kNotSup:
    case Errc::kBadF:
      return grpc::StatusCode::FAILED_PRECONDITION;
    case Errc::kPerm:
    case Errc::kAccess:
      return grpc::StatusCode::PERMISSION_DENIED;
    case Errc::kCorruption:
      return grpc::StatusCode::DATA_LOSS;
    case Errc::kTimedOut:
      return grpc::StatusCode::DEADLINE_EXCEEDED;
    case Errc::kCanceled:
      return grpc::StatusCode::CANCELLED;
    case Errc::kIo:
    case Errc::kMediaError:
    case Errc::kAgain:
    case Errc::kConnRefused:
    case Errc::kConnReset:
    case Errc::kShutdown:
    case Errc::kNoDevOrAddr:
      return grpc::StatusCode::UNAVAILABLE;
    default:
      return grpc::StatusCode::INTERNAL;
  }
}

grpc::Status to_grpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  std::string msg = s.message().empty() ? errc_describe(s.code()) : std::string(s.message());
  return grpc::Status(grpc_code(s.code()), msg);
}

}  // namespace tern::engine
