// DiskPool (tern.io/v1alpha1): the Kubernetes object that declares a pool, as the agent reads it, and the
// status and patches the agent writes back. Pure (JSON in, JSON out): unit-tested and fuzzed
// (tests/fuzz/kube_fuzz.cc), since every object comes from the API server over the network.
//
//   auto dp = parse_diskpool(item);            // from a list's items or a watch event's object
//   PoolView v = ...;                          // what the agent says of the pool of that name
//   json st = pool_status(*dp, &v, "", "");    // the status the object should show
//   if (st != dp->status) patch(status_patch(dp->status, st));
//
// Threads: none.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace tern::kube {

// Our finalizer: a DiskPool being deleted keeps it until its pool is destroyed.
inline constexpr std::string_view kFinalizer = "tern.io/pool-protection";
inline constexpr std::string_view kGroupVersion = "tern.io/v1alpha1";
// An annotation: with the value "true", deleting the DiskPool leaves its pool (only the object goes).
inline constexpr std::string_view kRetainAnnotation = "tern.io/retain-pool";

struct DiskPool {
  // metadata
  std::string name;
  std::string ns;
  std::string uid;
  std::string resource_version;
  int64_t generation = 0;
  bool deleting = false;  // metadata.deletionTimestamp is set
  bool retain = false;    // annotated tern.io/retain-pool: "true"
  std::vector<std::string> finalizers;
  // spec (as given; validate_spec() says whether the agent can act on it)
  std::string node;
  std::vector<std::string> disks;
  std::map<std::string, std::string> labels;
  std::string spec_error;  // the first field of the spec of the wrong type ("" when none)
  // status as the object has it (an object, or null when it has none)
  nlohmann::json status;

  bool has_finalizer() const;
  // The disk as a device URI: a path is taken as uring://<path>.
  std::string disk_uri() const;
};

// Reads a DiskPool object. kInval naming the field for one whose metadata cannot be read (no name) or
// whose fields have the wrong JSON types; a spec the agent cannot act on still parses (validate_spec).
Result<DiskPool> parse_diskpool(const nlohmann::json& obj);

// What the agent needs of the spec: a node, exactly one disk (a path or a device URI), label values that
// are strings. kInval with a sentence for status.reason.
Status validate_spec(const DiskPool& dp);

// The agent's view of a pool (the REST API's pool document, GET /v1/pools/{name}).
struct PoolView {
  std::string node;
  std::string disk;
  std::map<std::string, std::string> labels;
  std::string state;   // creating | created | deleting (the spec's)
  std::string status;  // online | degraded | offline | missing | unknown | creating | deleting | ...
  std::optional<uint64_t> capacity, used, committed;
  uint32_t replicas = 0;
  std::string reason;

  // From the REST document; kInval when a field is missing or of the wrong type.
  static Result<PoolView> FromJson(const nlohmann::json& j);
};

// The status a DiskPool should show. `pool`: the agent's pool (null when there is none); `state`: the
// DiskPool's state ("Creating", "Created", "Deleting", "Error"; empty: derived from the pool's); `reason`:
// why (empty: the pool's own reason, if any). Values outside the CRD's enums are mapped into them
// ("unknown"), so the API server never refuses the status.
nlohmann::json pool_status(const DiskPool& dp, const PoolView* pool, std::string state, std::string reason);

// A JSON merge patch (RFC 7386) of the status subresource turning `current` into `desired`: fields that
// are gone become null.
nlohmann::json status_patch(const nlohmann::json& current, const nlohmann::json& desired);

// A merge patch of the object's finalizers: ours added (add) or removed, conditional on the object's
// resourceVersion (the API server answers 409 when the object changed in between, and the next event
// brings the new one).
nlohmann::json finalizer_patch(const DiskPool& dp, bool add);

// Splits a watch response's body (one JSON document per line) into lines, whatever pieces it arrives
// in. A line longer than `max_line` is an error (the watch is then restarted).
class LineSplitter {
 public:
  explicit LineSplitter(size_t max_line = 16u << 20) : max_line_(max_line) {}
  // Appends `data`; complete lines (without their "\n"; empty ones skipped) go to `out`. kInval when a
  // line grows past the limit.
  Status feed(std::string_view data, std::vector<std::string>& out);
  size_t pending() const { return partial_.size(); }

 private:
  size_t max_line_;
  std::string partial_;
};

// One watch event: ADDED, MODIFIED, DELETED, BOOKMARK or ERROR, with its object (for ERROR a Status
// whose `code` is 410 when the resourceVersion is too old).
struct WatchEvent {
  std::string type;
  nlohmann::json object;
  // The object's metadata.resourceVersion ("" when none).
  std::string resource_version;
  // ERROR's Status code (0 otherwise).
  int code = 0;
};
Result<WatchEvent> parse_watch_event(std::string_view line);

}  // namespace tern::kube
