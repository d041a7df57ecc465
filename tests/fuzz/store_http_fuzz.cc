// libFuzzer target for the store's input handling: the HTTP response parser (what an etcd endpoint, or
// anything listening where one should be, sends back) and the etcd gateway's JSON replies and base64.
// The first byte picks the mode.
//
// Properties besides "no crash, no sanitizer report":
//   parser  the outcome does not depend on how the bytes are cut: the input fed whole and fed in pieces
//           (sizes from the second byte) give the same end state and head, and unless it is an error the
//           same body, chunks, trailers and bytes consumed; body
//           data points into the piece given; a complete Content-Length body has exactly that length;
//           the body limit holds; a complete response re-parses alone (its consumed prefix) identically.
//   codec   every reply parser answers a value or a kProto error ("unexpected reply: ..."); base64
//           decodes what it encodes, and what it decodes re-encodes to something that decodes the same.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "store/base64.h"
#include "store/etcd_codec.h"
#include "store/http_parser.h"

using namespace tern;
using namespace tern::store;

static void check(bool ok) {
  if (!ok) std::abort();
}

namespace {

struct Outcome {
  int state = 0;  // 0 incomplete, 1 complete, 2 error
  bool got_head = false;
  int status = 0;
  std::vector<HttpHeader> headers;
  std::string body;
  std::vector<std::string> chunks;
  std::vector<HttpHeader> trailers;
  size_t consumed = 0;
  bool reusable = false;
  std::optional<uint64_t> content_length;
  bool chunked = false;
};

Outcome run(std::string_view in, const std::vector<size_t>& pieces, bool finish, bool head_request,
            const HttpParserLimits& limits) {
  HttpResponseParser p(limits);
  p.reset(head_request);
  Outcome o;
  std::string chunk;
  size_t pos = 0, k = 0;
  while (o.state == 0 && pos < in.size()) {
    size_t n = pieces.empty() ? in.size() - pos : std::min(in.size() - pos, std::max<size_t>(1, pieces[k++ % pieces.size()]));
    // A buffer of exactly the piece's size, so ASan sees any read past it.
    std::unique_ptr<char[]> buf(new char[n]);
    std::copy(in.begin() + long(pos), in.begin() + long(pos + n), buf.get());
    std::string_view v(buf.get(), n);
    pos += n;
    while (o.state == 0) {
      auto s = p.next(v);
      check(s.consumed <= v.size());
      v.remove_prefix(s.consumed);
      o.consumed += s.consumed;
      if (s.event == HttpResponseParser::Event::kNeedMore) {
        check(v.empty());
        break;
      }
      switch (s.event) {
        case HttpResponseParser::Event::kHead:
          check(!o.got_head);
          o.got_head = true;
          o.status = p.head().status;
          o.headers = p.head().headers;
          o.content_length = p.head().content_length;
          o.chunked = p.head().chunked;
          check(o.status >= 200 && o.status <= 599);
          break;
        case HttpResponseParser::Event::kBody:
          check(o.got_head && !s.data.empty());
          check(s.data.data() >= buf.get() && s.data.data() + s.data.size() <= buf.get() + n);
          o.body.append(s.data);
          chunk.append(s.data);
          break;
        case HttpResponseParser::Event::kChunkEnd:
          check(o.chunked);
          o.chunks.push_back(chunk);
          chunk.clear();
          break;
        case HttpResponseParser::Event::kComplete:
          check(o.got_head);
          o.state = 1;
          o.reusable = p.reusable();
          o.trailers = p.trailers();
          break;
        case HttpResponseParser::Event::kError:
          check(!p.error().empty());
          o.state = 2;
          break;
        default:
          break;
      }
    }
  }
  if (o.state == 0 && finish) {
    auto s = p.finish();
    if (s.event == HttpResponseParser::Event::kComplete) {
      check(o.got_head);
      o.state = 1;
      o.trailers = p.trailers();
    } else {
      check(s.event == HttpResponseParser::Event::kError && !p.error().empty());
      o.state = 2;
    }
  }
  check(p.body_bytes() == o.body.size());
  if (limits.max_body_bytes) check(o.body.size() <= limits.max_body_bytes);
  if (o.state == 1 && o.content_length && !o.chunked && !head_request && o.status != 204 && o.status != 304) {
    check(o.body.size() == *o.content_length);
  }
  if (o.reusable) check(o.state == 1);
  return o;
}

void fuzz_parser(std::string_view in) {
  if (in.size() < 2) return;
  const uint8_t flags = uint8_t(in[0]);
  const uint8_t split = uint8_t(in[1]);
  in.remove_prefix(2);
  const bool finish = flags & 1;
  const bool head_request = flags & 2;
  HttpParserLimits limits;
  if (flags & 4) {
    limits.max_head_bytes = 128;
    limits.max_header_lines = 4;
    limits.max_chunk_line_bytes = 24;
    limits.max_body_bytes = 64;
    limits.max_interim_responses = 2;
  }
  Outcome whole = run(in, {}, finish, head_request, limits);
  std::vector<size_t> pieces;
  for (unsigned i = 0; i < 8; ++i) pieces.push_back(((split >> (i % 8)) & 7) + (i % 3));
  Outcome cut = run(in, pieces, finish, head_request, limits);
  check(cut.state == whole.state);
  check(cut.got_head == whole.got_head && cut.status == whole.status && cut.headers == whole.headers);
  check(cut.reusable == whole.reusable);
  if (whole.state != 2) {
    // (Before an error, how much body was handed out depends on where the cuts fell: the body limit of a
    // close-delimited body trips on the piece that crosses it.)
    check(cut.body == whole.body && cut.chunks == whole.chunks && cut.trailers == whole.trailers);
    check(cut.consumed == whole.consumed);
  }
  if (whole.state == 1 && !finish) {
    // The response alone parses the same.
    Outcome alone = run(in.substr(0, whole.consumed), {}, false, head_request, limits);
    check(alone.state == 1 && alone.body == whole.body && alone.consumed == whole.consumed);
  }
}

// A reply parser answers a value or an error that says something.
template <typename R>
void expect_value_or_proto(const R& r) {
  if (!r.ok()) check(!r.status().message().empty());
}

void fuzz_codec(std::string_view in) {
  expect_value_or_proto(etcd::parse_put(in));
  expect_value_or_proto(etcd::parse_range(in));
  expect_value_or_proto(etcd::parse_delete(in));
  expect_value_or_proto(etcd::parse_txn(in));
  expect_value_or_proto(etcd::parse_lease_grant(in));
  expect_value_or_proto(etcd::parse_lease_keepalive(in));
  expect_value_or_proto(etcd::parse_watch_message(in));
  Status st = etcd::error_status(500, in);
  check(!st.ok());
  (void)etcd::prefix_end(in);

  std::string enc = base64_encode(in);
  auto back = base64_decode(enc);
  check(back.ok() && *back == in);
  auto dec = base64_decode(in);
  if (dec.ok()) {
    auto again = base64_decode(base64_encode(*dec));
    check(again.ok() && *again == *dec);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) {
    fuzz_codec(in);
  } else {
    fuzz_parser(in);
  }
  return 0;
}
