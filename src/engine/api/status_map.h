// How the engine's errors reach gRPC clients (the table in docs/api/engine-v1.md, "Errors"):
//
//   kInval, kRange, kFBig      INVALID_ARGUMENT     the message names the field
//   kNoEnt, kNoDev             NOT_FOUND
//   kExist                     ALREADY_EXISTS       the message names the argument that differs
//   kNoSpc                     RESOURCE_EXHAUSTED
//   kBusy, kNotSup, kBadF      FAILED_PRECONDITION  open, shared, not supported by this device, closed
//   kPerm, kAccess             PERMISSION_DENIED
//   kCorruption                DATA_LOSS            metadata failed validation
//   kTimedOut                  DEADLINE_EXCEEDED
//   kCanceled                  CANCELLED
//   kIo, kMediaError, kAgain,
//   kConnRefused, kConnReset,
//   kShutdown, kNoDevOrAddr    UNAVAILABLE          retry later, or elsewhere
//   anything else              INTERNAL
#pragma once

#include <grpcpp/grpcpp.h>

#include "common/status.h"

namespace tern::engine {

grpc::StatusCode grpc_code(Errc e);
grpc::Status to_grpc(const Status& s);

}  // namespace tern::engine
