// The control plane from the command line, through the core agent's REST API (rest_client.h):
//   ternctl get nodes|pools|volumes|replicas [NAME]
//   ternctl describe volume UUID
//   ternctl volume create [UUID] --size S [--replicas N] [--thin] [--spread KEY] [--node-label K=V] ...
//   ternctl volume publish UUID [--node N] [--protocol nvmf|nbd] [--host NQN] [--republish] / unpublish UUID
//   ternctl volume scale UUID N / expand UUID --size S
//   ternctl volume destroy UUID
//   ternctl node cordon|uncordon|drain NODE [--label L]
//   ternctl cluster pool add NAME --node N --disk URI [--label K=V] / remove NAME [--force]
// Exit codes as for the engine commands: 3 not found, 4 exists with other arguments, 5 refused in the
// current state (in use, in progress), 6 no room, 7 agent unreachable or a standby, 9 invalid argument.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace tern::ctl {

void add_cluster_commands(CLI::App& app, std::function<int()>* run);

}  // namespace tern::ctl
