#include "store/etcd_codec.h"

#include <charconv>
#include <limits>

#include <nlohmann/json.hpp>

#include "store/base64.h"

namespace tern::store::etcd {

using json = nlohmann::json;

namespace {

// nlohmann's parser recurses once per nesting level: a reply nested thousands deep would run the reactor's
// stack out. etcd's replies are a few levels deep.
constexpr int kMaxDepth = 32;

bool depth_ok(std::string_view s) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxDepth) return false;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return true;
}

Status bad(std::string_view what) { return Status(Errc::kProto, fmt::format("unexpected reply: {}", what)); }

Result<json> parse_json(std::string_view text) {
  if (!depth_ok(text)) return bad(fmt::format("JSON nested deeper than {} levels", kMaxDepth));
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return bad("not valid JSON");
  if (!j.is_object()) return bad("not a JSON object");
  return j;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string i64s(int64_t v) { return std::to_string(v); }

// Field readers. A missing field is its default (proto3 JSON leaves defaults out); a field of the wrong
// type is an error naming it.
Status get_i64(const json& o, const char* name, int64_t& out) {
  out = 0;
  auto it = o.find(name);
  if (it == o.end() || it->is_null()) return Status();
  if (it->is_string()) {
    const std::string& s = it->get_ref<const std::string&>();
    int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || s.empty()) {
      return bad(fmt::format("field '{}' is not an integer", name));
    }
    out = v;
    return Status();
  }
  if (it->is_number_integer()) {
    if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())) {
      return bad(fmt::format("field '{}' out of range", name));
    }
    out = it->get<int64_t>();
    return Status();
  }
  return bad(fmt::format("field '{}' is not an integer", name));
}

Status get_bool(const json& o, const char* name, bool& out) {
  out = false;
  auto it = o.find(name);
  if (it == o.end() || it->is_null()) return Status();
  if (!it->is_boolean()) return bad(fmt::format("field '{}' is not a boolean", name));
  out = it->get<bool>();
  return Status();
}

Status get_string(const json& o, const char* name, std::string& out) {
  out.clear();
  auto it = o.find(name);
  if (it == o.end() || it->is_null()) return Status();
  if (!it->is_string()) return bad(fmt::format("field '{}' is not a string", name));
  out = it->get_ref<const std::string&>();
  return Status();
}

Status get_bytes(const json& o, const char* name, std::string& out) {
  std::string text;
  TERN_RETURN_IF_ERROR(get_string(o, name, text));
  auto d = base64_decode(text);
  if (!d.ok()) return bad(fmt::format("field '{}': {}", name, d.status().message()));
  out = std::move(*d);
  return Status();
}

// A nested object: null when missing.
Result<const json*> get_object(const json& o, const char* name) {
  auto it = o.find(name);
  if (it == o.end() || it->is_null()) return static_cast<const json*>(nullptr);
  if (!it->is_object()) return bad(fmt::format("field '{}' is not an object", name));
  return &*it;
}

Result<const json*> get_array(const json& o, const char* name) {
  auto it = o.find(name);
  if (it == o.end() || it->is_null()) return static_cast<const json*>(nullptr);
  if (!it->is_array()) return bad(fmt::format("field '{}' is not an array", name));
  return &*it;
}

Status header_revision(const json& o, int64_t& rev) {
  rev = 0;
  TERN_ASSIGN_OR_RETURN(const json* h, get_object(o, "header"));
  if (!h) return Status();
  return get_i64(*h, "revision", rev);
}

Status parse_kv(const json& o, KeyValue& kv) {
  if (!o.is_object()) return bad("a key-value is not an object");
  TERN_RETURN_IF_ERROR(get_bytes(o, "key", kv.key));
  TERN_RETURN_IF_ERROR(get_bytes(o, "value", kv.value));
  TERN_RETURN_IF_ERROR(get_i64(o, "create_revision", kv.create_revision));
  TERN_RETURN_IF_ERROR(get_i64(o, "mod_revision", kv.mod_revision));
  TERN_RETURN_IF_ERROR(get_i64(o, "version", kv.version));
  TERN_RETURN_IF_ERROR(get_i64(o, "lease", kv.lease));
  return Status();
}

Status parse_range_object(const json& o, RangeResult& r) {
  TERN_RETURN_IF_ERROR(header_revision(o, r.revision));
  TERN_RETURN_IF_ERROR(get_i64(o, "count", r.count));
  TERN_RETURN_IF_ERROR(get_bool(o, "more", r.more));
  TERN_ASSIGN_OR_RETURN(const json* kvs, get_array(o, "kvs"));
  if (kvs) {
    for (const auto& e : *kvs) {
      KeyValue kv;
      TERN_RETURN_IF_ERROR(parse_kv(e, kv));
      r.kvs.push_back(std::move(kv));
    }
  }
  return Status();
}

json op_json(const TxnOp& op) {
  json body = json::object();
  body["key"] = base64_encode(op.key);
  switch (op.kind) {
    case TxnOp::Kind::kPut:
      body["value"] = base64_encode(op.value);
      if (op.lease) body["lease"] = i64s(op.lease);
      return json{{"request_put", body}};
    case TxnOp::Kind::kDelete:
      if (op.prefix) body["range_end"] = base64_encode(prefix_end(op.key));
      return json{{"request_delete_range", body}};
    case TxnOp::Kind::kRange:
      if (op.prefix) body["range_end"] = base64_encode(prefix_end(op.key));
      return json{{"request_range", body}};
  }
  return json::object();
}

const char* target_name(Compare::Target t) {
  switch (t) {
    case Compare::Target::kValue: return "VALUE";
    case Compare::Target::kVersion: return "VERSION";
    case Compare::Target::kCreateRevision: return "CREATE";
    case Compare::Target::kModRevision: return "MOD";
    case Compare::Target::kLease: return "LEASE";
  }
  return "VERSION";
}

const char* op_name(Compare::Op op) {
  switch (op) {
    case Compare::Op::kEqual: return "EQUAL";
    case Compare::Op::kNotEqual: return "NOT_EQUAL";
    case Compare::Op::kGreater: return "GREATER";
    case Compare::Op::kLess: return "LESS";
  }
  return "EQUAL";
}

json compare_json(const Compare& c) {
  json j = json::object();
  j["key"] = base64_encode(c.key);
  j["target"] = target_name(c.target);
  j["result"] = op_name(c.op);
  // The union member is written even at 0: "version 0" (absent) must be compared, not left unset.
  switch (c.target) {
    case Compare::Target::kValue: j["value"] = base64_encode(c.value); break;
    case Compare::Target::kVersion: j["version"] = i64s(c.number); break;
    case Compare::Target::kCreateRevision: j["create_revision"] = i64s(c.number); break;
    case Compare::Target::kModRevision: j["mod_revision"] = i64s(c.number); break;
    case Compare::Target::kLease: j["lease"] = i64s(c.number); break;
  }
  return j;
}

Errc from_grpc(int64_t code) {
  switch (code) {
    case 1: return Errc::kCanceled;    // CANCELLED
    case 3: return Errc::kInval;       // INVALID_ARGUMENT
    case 4: return Errc::kTimedOut;    // DEADLINE_EXCEEDED
    case 5: return Errc::kNoEnt;       // NOT_FOUND
    case 6: return Errc::kExist;       // ALREADY_EXISTS
    case 7: return Errc::kAccess;      // PERMISSION_DENIED
    case 8: return Errc::kNoSpc;       // RESOURCE_EXHAUSTED
    case 9: return Errc::kInval;       // FAILED_PRECONDITION
    case 10: return Errc::kAgain;      // ABORTED
    case 11: return Errc::kRange;      // OUT_OF_RANGE (a compacted revision)
    case 12: return Errc::kNotSup;     // UNIMPLEMENTED
    case 14: return Errc::kAgain;      // UNAVAILABLE
    case 16: return Errc::kPerm;       // UNAUTHENTICATED
    default: return Errc::kIo;         // UNKNOWN, INTERNAL, DATA_LOSS, ...
  }
}

// The "result" object of a stream message (keep-alive answers come wrapped like the watch's).
Result<const json*> stream_result(const json& j) {
  TERN_ASSIGN_OR_RETURN(const json* r, get_object(j, "result"));
  return r ? r : &j;
}

}  // namespace

std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    if (uint8_t(end.back()) < 0xff) {
      end.back() = char(uint8_t(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

std::string put_body(std::string_view key, std::string_view value, int64_t lease) {
  json j = {{"key", base64_encode(key)}, {"value", base64_encode(value)}};
  if (lease) j["lease"] = i64s(lease);
  return dump(j);
}

std::string range_body(std::string_view key, std::string_view range_end, int64_t limit) {
  json j = {{"key", base64_encode(key)}};
  if (!range_end.empty()) j["range_end"] = base64_encode(range_end);
  if (limit > 0) j["limit"] = i64s(limit);
  return dump(j);
}

std::string delete_body(std::string_view key, std::string_view range_end) {
  json j = {{"key", base64_encode(key)}};
  if (!range_end.empty()) j["range_end"] = base64_encode(range_end);
  return dump(j);
}

std::string txn_body(const Txn& txn) {
  json cmp = json::array(), success = json::array(), failure = json::array();
  for (const auto& c : txn.compare) cmp.push_back(compare_json(c));
  for (const auto& op : txn.success) success.push_back(op_json(op));
  for (const auto& op : txn.failure) failure.push_back(op_json(op));
  return dump(json{{"compare", cmp}, {"success", success}, {"failure", failure}});
}

std::string compact_body(int64_t revision) { return dump(json{{"revision", i64s(revision)}}); }

std::string lease_grant_body(int64_t ttl_seconds) { return dump(json{{"TTL", i64s(ttl_seconds)}}); }

std::string lease_id_body(int64_t id) { return dump(json{{"ID", i64s(id)}}); }

std::string watch_create_body(std::string_view key, std::string_view range_end, int64_t start_revision,
                              bool progress_notify) {
  json c = {{"key", base64_encode(key)}};
  if (!range_end.empty()) c["range_end"] = base64_encode(range_end);
  if (start_revision > 0) c["start_revision"] = i64s(start_revision);
  if (progress_notify) c["progress_notify"] = true;
  return dump(json{{"create_request", c}});
}

Result<int64_t> parse_put(std::string_view body) {
  TERN_ASSIGN_OR_RETURN(json j, parse_json(body));
  int64_t rev = 0;
  TERN_RETURN_IF_ERROR(header_revision(j, rev));
  if (rev <= 0) return bad("no revision in the header");
  return rev;
}

Result<RangeResult> parse_range(std::string_view body) {
  TERN_ASSIGN_OR_RETURN(json j, parse_json(body));
  RangeResult r;
  TERN_RETURN_IF_ERROR(parse_range_object(j, r));
  return r;
}

Result<int64_t> parse_delete(std::string_view body) {
  TERN_ASSIGN_OR_RETURN(json j, parse_json(body));
  int64_t deleted = 0;
  TERN_RETURN_IF_ERROR(get_i64(j, "deleted", deleted));
  return deleted;
}

Result<TxnResult> parse_txn(std::string_view body) {
  TERN_ASSIGN_OR_RETURN(json j, parse_json(body));
  TxnResult r;
  TERN_RETURN_IF_ERROR(header_revision(j, r.revision));
  TERN_RETURN_IF_ERROR(get_bool(j, "succeeded", r.succeeded));
  TERN_ASSIGN_OR_RETURN(const json* responses, get_array(j, "responses"));
  if (!responses) return r;
  for (const auto& e : *responses) {
    if (!e.is_object()) return bad("a transaction response is not an object");
    TxnOpResult op;
    TERN_ASSIGN_OR_RETURN(const json* put, get_object(e, "response_put"));
    TERN_ASSIGN_OR_RETURN(const json* range, get_object(e, "response_range"));
    TERN_ASSIGN_OR_RETURN(const json* del, get_object(e, "response_delete_range"));
    if (put) {
      op.kind = TxnOp::Kind::kPut;
    } else if (range) {
      op.kind = TxnOp::Kind::kRange;
      TERN_RETURN_IF_ERROR(parse_range_object(*range, op.range));
    } else if (del) {
      op.kind = TxnOp::Kind::kDelete;
      TERN_RETURN_IF_ERROR(get_i64(*del, "deleted", op.deleted));
    } else {
      return bad("a transaction response of an unknown kind");
    }
    r.responses.push_back(std::move(op));
  }
  return r;
}

Result<Lease> parse_lease_grant(std::string_view body) {
  TERN_ASSIGN_OR_RETURN(json j, parse_json(body));
  Lease l;
  TERN_RETURN_IF_ERROR(get_i64(j, "ID", l.id));
  TERN_RETURN_IF_ERROR(get_i64(j, "TTL", l.ttl_seconds));
  std::string error;
  TERN_RETURN_IF_ERROR(get_string(j, "error", error));
  if (!error.empty()) return Status(Errc::kIo, error);
  if (l.id == 0) return bad("no lease ID");
  return l;
}

Result<int64_t> parse_lease_keepalive(std::string_view body) {
  // The gateway streams the answer: one {"result": ...} (or {"error": ...}) object per line.
  std::string_view first = body.substr(0, body.find('\n'));
  TERN_ASSIGN_OR_RETURN(json j, parse_json(first));
  TERN_ASSIGN_OR_RETURN(const json* err, get_object(j, "error"));
  if (err) {
    int64_t code = 0;
    std::string msg;
    TERN_RETURN_IF_ERROR(get_i64(*err, "grpc_code", code));
    TERN_RETURN_IF_ERROR(get_string(*err, "message", msg));
    return Status(from_grpc(code), msg);
  }
  TERN_ASSIGN_OR_RETURN(const json* r, stream_result(j));
  int64_t ttl = 0;
  TERN_RETURN_IF_ERROR(get_i64(*r, "TTL", ttl));
  if (ttl <= 0) return Status(Errc::kNoEnt, "lease not found (expired or revoked)");
  return ttl;
}

Result<int64_t> parse_header_revision(std::string_view body) {
  TERN_ASSIGN_OR_RETURN(json j, parse_json(body));
  int64_t rev = 0;
  TERN_RETURN_IF_ERROR(header_revision(j, rev));
  return rev;
}

Status error_status(int http_status, std::string_view body) {
  auto j = parse_json(body);
  if (j.ok()) {
    int64_t code = 0;
    std::string message, error;
    if (get_i64(*j, "code", code).ok() && get_string(*j, "message", message).ok() &&
        get_string(*j, "error", error).ok() && (code != 0 || !message.empty() || !error.empty())) {
      return Status(from_grpc(code), message.empty() ? error : message);
    }
  }
  std::string_view excerpt = body.substr(0, 200);
  bool printable = true;
  for (char c : excerpt)
    if (uint8_t(c) < 0x20 || uint8_t(c) >= 0x7f) printable = false;
  return Status::Errorf(Errc::kIo, "HTTP status {}{}{}", http_status, printable && !excerpt.empty() ? ": " : "",
                        printable ? excerpt : std::string_view());
}

bool transient(const Status& st) { return st.code() == Errc::kAgain || st.code() == Errc::kTimedOut; }

Result<WatchMessage> parse_watch_message(std::string_view text) {
  TERN_ASSIGN_OR_RETURN(json j, parse_json(text));
  TERN_ASSIGN_OR_RETURN(const json* err, get_object(j, "error"));
  if (err) {
    int64_t code = 0;
    std::string msg;
    TERN_RETURN_IF_ERROR(get_i64(*err, "grpc_code", code));
    TERN_RETURN_IF_ERROR(get_string(*err, "message", msg));
    return Status(from_grpc(code), msg.empty() ? std::string("the watch stream failed") : msg);
  }
  TERN_ASSIGN_OR_RETURN(const json* r, get_object(j, "result"));
  if (!r) return bad("a watch message without 'result'");
  WatchMessage m;
  TERN_RETURN_IF_ERROR(header_revision(*r, m.revision));
  TERN_RETURN_IF_ERROR(get_bool(*r, "created", m.created));
  TERN_RETURN_IF_ERROR(get_bool(*r, "canceled", m.canceled));
  TERN_RETURN_IF_ERROR(get_i64(*r, "watch_id", m.watch_id));
  TERN_RETURN_IF_ERROR(get_i64(*r, "compact_revision", m.compact_revision));
  TERN_RETURN_IF_ERROR(get_string(*r, "cancel_reason", m.cancel_reason));
  TERN_ASSIGN_OR_RETURN(const json* events, get_array(*r, "events"));
  if (events) {
    for (const auto& e : *events) {
      if (!e.is_object()) return bad("a watch event is not an object");
      WatchEvent ev;
      std::string type;
      TERN_RETURN_IF_ERROR(get_string(e, "type", type));
      if (type.empty() || type == "PUT") {
        ev.type = WatchEvent::Type::kPut;
      } else if (type == "DELETE") {
        ev.type = WatchEvent::Type::kDelete;
      } else {
        return bad(fmt::format("unknown watch event type '{}'", type.substr(0, 40)));
      }
      TERN_ASSIGN_OR_RETURN(const json* kv, get_object(e, "kv"));
      if (!kv) return bad("a watch event without 'kv'");
      TERN_RETURN_IF_ERROR(parse_kv(*kv, ev.kv));
      m.events.push_back(std::move(ev));
    }
  }
  return m;
}

}  // namespace tern::store::etcd
