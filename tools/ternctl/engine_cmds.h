// `ternctl pool|replica|snapshot|clone|bdev|nvmf|stats|node|test|nexus ...`: the io-engine's gRPC API from the
// command line. Each command is one call (two for a few conveniences); tables by default, -o json|yaml
// for scripts.
//
// Exit codes: 0 done; 1 failed (internal error); 2 bad command line; 3 not found; 4 already exists
// with other arguments; 5 refused in the current state (busy, shared, open: see the message); 6 out of
// space; 7 engine unreachable or unavailable (retry); 8 data loss reported; 9 invalid argument.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace tern::ctl {

// Adds the engine command groups to `app`; `*run` is set to the chosen command.
void add_engine_commands(CLI::App& app, std::function<int()>* run);

}  // namespace tern::ctl
