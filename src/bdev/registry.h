// BdevRegistry: creates devices from URIs, names them, opens and destroys them.
//
// Threads: every method runs on the primary reactor (reactor 0) — the control plane's home. Callers on
// other threads use ReactorSet::run_sync(0, ...); callers on other reactors use submit_to(0, ...).
//
// URI schemes (see docs/design/bdev.md for every parameter):
//   uring:///path   aio:///path   malloc:///name   null:///name   error:///name?base=   delay:///name?base=
// Every failure leaves nothing behind: a device that fails to come up is not registered.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bdev/bdev.h"
#include "common/result.h"
#include "common/uri.h"
#include "reactor/task.h"
#include "reactor/task_scope.h"

namespace tern {

class ReactorSet;

class BdevRegistry {
 public:
  using Factory = std::function<Task<Result<std::unique_ptr<Bdev>>>(const Uri&, BdevRegistry&)>;

  // Registers the built-in schemes.
  explicit BdevRegistry(ReactorSet& reactors);
  ~BdevRegistry();

  ReactorSet& reactors() const { return reactors_; }
  void register_scheme(const std::string& scheme, Factory f);
  std::vector<std::string> schemes() const;

  // Parses `uri`, builds the device and registers it under its name. A name already in use is
  // EEXIST (naming the URI it was created from).
  Task<Result<Bdev*>> create(std::string uri);
  // Registers a device built elsewhere (pools register their replicas this way).
  Result<Bdev*> add(std::unique_ptr<Bdev> bdev, std::string created_from = {});

  Bdev* find(std::string_view name_or_uuid) const;
  // OK if `name` is a valid name that no device uses; factories check before they acquire anything.
  Status check_new_name(std::string_view name) const;
  std::vector<Bdev*> list() const;
  // The URI a device was created from ("" if added directly).
  std::string created_from(const Bdev& b) const;

  // Opens a descriptor. `events` runs on the primary reactor (e.g. kRemove when the device is destroyed
  // with force); the holder must then stop its I/O and close the descriptor.
  Result<std::unique_ptr<BdevDesc>> open(std::string_view name, bool writable, BdevEventFn events = {});

  // Destroys a device. Without force, an open device is EBUSY. With force, holders get kRemove, new I/O
  // fails with ENODEV, and the call waits (up to `timeout_ns`) for every descriptor to close.
  Task<Status> destroy(std::string_view name, bool force = false, uint64_t timeout_ns = 30'000'000'000ull);
  // Destroys everything, newest first (wrappers before what they wrap), with force; then waits for the
  // registry's own tasks (devices removing themselves) to end.
  Task<void> destroy_all();

  // Detached work on behalf of devices that must outlive them (a device removing itself once its base or
  // its controller is gone). Primary reactor.
  TaskScope& tasks() { return tasks_; }

  // Delivers `ev` to the holders of device `id` (Bdev::raise_event); a device gone meanwhile gets nothing.
  void deliver_event(uint64_t id, BdevEvent ev);

 private:
  struct Entry {
    std::unique_ptr<Bdev> bdev;
    std::string uri;
  };
  ReactorSet& reactors_;
  std::map<std::string, Factory> factories_;
  std::vector<Entry> devices_;  // in creation order
  uint64_t next_id_ = 0;
  TaskScope tasks_{"device registry"};
};

// Validates a device name: 1..255 printable characters, no whitespace.
Status validate_bdev_name(std::string_view name);

}  // namespace tern
