// `ternctl nexus rebuild start|pause|resume|stop|rate|status|history`: a nexus's rebuild jobs.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace tern::ctl {

// Adds the `rebuild` group under the `nexus` command; `*run` is set to the chosen command.
void add_rebuild_commands(CLI::App* nexus, std::function<int()>* run);

}  // namespace tern::ctl
