// The io-engine's settings from flags, environment variables and a YAML file. Precedence, highest
// first: a flag, its environment variable (TERN_<FLAG>, e.g. TERN_GRPC_ENDPOINT), the --config file
// (keys are the flag names: `grpc-endpoint: 0.0.0.0:10124`, `pools: [{name: p0, disk: uring:///dev/sdb}]`),
// the built-in default.
#pragma once

#include "common/result.h"
#include "engine/options.h"

namespace tern::engine {

// Parses argv. `exit_code` is set when the program should exit at once (--help, --version, errors
// already printed): 0 or 2.
Result<EngineOptions> parse_flags(int argc, char** argv, int* exit_code);

}  // namespace tern::engine
