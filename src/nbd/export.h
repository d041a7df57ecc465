// Export: one shared device, as the primary reactor keeps it. Internal to src/nbd.
//
// Threads: primary reactor only. Connections on other reactors never read it; they get what they need
// (descriptor, geometry) in the answer to their GO/EXPORT_NAME look-up, and hand back their counters
// when they detach.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bdev/bdev.h"
#include "nbd/server.h"
#include "reactor/task_scope.h"

namespace tern::nbd {

struct Export {
  std::string name;
  std::string bdev;
  bool read_only = false;
  std::unique_ptr<BdevDesc> desc;
  bool removing = false;                // remove_export began: look-ups no longer find it
  std::vector<Connection*> clients;     // attached connections (transmission phase), any reactor
  ExportCounters retired;               // counters of clients that have gone
};

// The part of the server that lives on each reactor.
struct Server::Slice {
  std::unique_ptr<BufferSet> buffers;
  std::vector<Connection*> conns;  // every connection on this reactor, handshaking ones included
  TaskScope teardowns{"nbd connection teardown"};  // connections finishing their close (stop() awaits it)
};

}  // namespace tern::nbd
