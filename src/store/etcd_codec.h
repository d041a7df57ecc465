// etcd's v3 JSON gateway as pure functions: request bodies out, replies in. No I/O, so every reply shape
// (and every malformed one) is tested without an etcd (tests/unit/store/etcd_codec_test.cc).
//
// The gateway's conventions (etcd 3.4, grpc-gateway with proto3 JSON): keys and values are base64
// strings; int64 fields are decimal strings (numbers are accepted too); fields at their default value
// (0, false, empty) are left out; enums are names ("DELETE"); a failed call answers with an HTTP error
// status and {"error": "...", "message": "...", "code": <gRPC code>}; a stream (watch, keep-alive) sends
// one {"result": {...}} or {"error": {...}} object per message.
//
// Parse errors are kProto with a message that starts "unexpected reply: " and says what was wrong.
//
// Pure functions; any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "store/etcd_types.h"

namespace tern::store::etcd {

// etcd's range end for "every key starting with `prefix`": the prefix with its last byte below 0xff
// incremented and what follows dropped; "\0" (every key from the start key on) when there is none.
std::string prefix_end(std::string_view prefix);

// Request bodies (JSON).
std::string put_body(std::string_view key, std::string_view value, int64_t lease);
// `range_end` empty: the one key.
std::string range_body(std::string_view key, std::string_view range_end, int64_t limit);
std::string delete_body(std::string_view key, std::string_view range_end);
std::string txn_body(const Txn& txn);
std::string compact_body(int64_t revision);
std::string lease_grant_body(int64_t ttl_seconds);
std::string lease_id_body(int64_t id);
// `start_revision` 0: from the next change on.
std::string watch_create_body(std::string_view key, std::string_view range_end, int64_t start_revision,
                              bool progress_notify);

// Replies (HTTP 200 bodies).
Result<int64_t> parse_put(std::string_view body);  // the revision the put created
Result<RangeResult> parse_range(std::string_view body);
Result<int64_t> parse_delete(std::string_view body);  // keys deleted
Result<TxnResult> parse_txn(std::string_view body);
Result<Lease> parse_lease_grant(std::string_view body);
// The remaining TTL in seconds; kNoEnt when the lease is gone (etcd answers a TTL of 0 then).
Result<int64_t> parse_lease_keepalive(std::string_view body);
// The revision of the header (any reply that has one).
Result<int64_t> parse_header_revision(std::string_view body);

// A non-200 reply as a Status: the gRPC code mapped to an Errc (NOT_FOUND -> kNoEnt, INVALID_ARGUMENT
// -> kInval, DEADLINE_EXCEEDED -> kTimedOut, UNAVAILABLE -> kAgain, ...) and etcd's message ("etcdserver:
// requested lease not found"). Bodies that are not the gateway's error shape give kIo with the HTTP status.
Status error_status(int http_status, std::string_view body);
// Retrying elsewhere may help: UNAVAILABLE (no leader, a member that is stopping) and timeouts.
bool transient(const Status& st);

struct WatchMessage {
  bool created = false;   // the watch was set up
  bool canceled = false;  // the server ended it (compacted, or an error)
  int64_t watch_id = 0;
  int64_t revision = 0;          // of the header
  int64_t compact_revision = 0;  // canceled: the oldest revision still available
  std::string cancel_reason;
  std::vector<WatchEvent> events;
};
// One message of the watch stream (one JSON object; surrounding whitespace allowed). An in-stream error
// object comes back as its Status.
Result<WatchMessage> parse_watch_message(std::string_view text);

}  // namespace tern::store::etcd
