// The engine's Prometheus page (docs/operations.md, "Metrics", lists every family), built from the
// managers' domain types.
//
// Threads: runs on reactor 0 (the metrics server's thread calls it through run_sync(0, ...)); device
// statistics visit each reactor with submit_to.
#pragma once

#include <string>

#include "reactor/task.h"

namespace tern::engine {

class Engine;

Task<std::string> metrics_page(Engine& engine);

}  // namespace tern::engine
