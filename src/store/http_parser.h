// HttpResponseParser: one HTTP/1.x response at a time, as a pure state machine — bytes in, events out.
//
//   HttpResponseParser p;
//   p.reset();
//   while (!in.empty()) {
//     auto s = p.next(in);              // consumes a prefix of `in`, stops at the first event
//     in.remove_prefix(s.consumed);
//     switch (s.event) { case kHead: ...; case kBody: use(s.data); ...; case kNeedMore: break; }
//   }
//
// It never does I/O, never reads past its input, and copies what it must keep (the current head line),
// so the caller may hand it the network's bytes in any fragmentation — one byte at a time gives the same
// events as everything at once (body data then comes in more, smaller pieces). That is what makes it
// fuzzable (tests/fuzz/store_http_fuzz.cc) and lets the client (http_client.h) feed it straight from the
// socket's receive buffer.
//
// Accepted: a status line "HTTP/1.<d> <3 digits>[ <reason>]", header lines, bodies delimited by
// Content-Length, by `Transfer-Encoding: chunked` (chunk extensions are checked against RFC 9112's grammar
// and skipped; trailers are kept) or by the connection's end; interim 1xx responses are skipped. Strict
// where leniency could desynchronise a kept-alive connection — bare CR, obs-fold, whitespace before a
// colon, conflicting Content-Lengths, codings other than chunked, a chunk longer than its size — and
// lenient where it costs nothing (a bare LF ends a line, a missing reason phrase). Every error is a
// sentence saying what was wrong; after an error the connection cannot be trusted and must be closed.
//
// Threads: none of its own; an object belongs to whoever feeds it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::store {

struct HttpHeader {
  std::string name;  // as sent
  std::string value;  // without surrounding whitespace
  friend bool operator==(const HttpHeader&, const HttpHeader&) = default;
};

struct HttpResponseHead {
  int minor_version = 1;  // HTTP/1.<minor>
  int status = 0;
  std::string reason;
  std::vector<HttpHeader> headers;
  // Derived from the headers.
  bool chunked = false;
  std::optional<uint64_t> content_length;
  // The server lets the connection stay open after this response (HTTP/1.1 without "Connection: close",
  // HTTP/1.0 with "Connection: keep-alive").
  bool keep_alive = true;

  // The first header of that name (case-insensitive), or null.
  const std::string* header(std::string_view name) const;
};

struct HttpParserLimits {
  size_t max_head_bytes = 64 * 1024;  // status line and headers; trailers separately
  size_t max_header_lines = 100;      // in the head; the same number again for trailers
  size_t max_chunk_line_bytes = 4096;  // a chunk-size line with its extensions
  uint64_t max_body_bytes = 64ull << 20;  // 0: no limit (streams)
  unsigned max_interim_responses = 16;  // 1xx heads skipped before the final one
};

class HttpResponseParser {
 public:
  enum class Event {
    kNeedMore,  // every byte given was consumed without completing an event
    kHead,      // the final (non-1xx) head is complete: head()
    kBody,      // `data` is the next piece of the body (of the current chunk, when chunked)
    kChunkEnd,  // the current chunk of a chunked body ended (its data came in kBody events)
    kComplete,  // the response ended; bytes after it belong to the next response
    kError,     // the response is malformed: error() says why; nothing more is parsed
  };
  struct Step {
    Event event = Event::kNeedMore;
    size_t consumed = 0;     // bytes of the input used up to and including this event
    std::string_view data;   // kBody: points into the input given to next()
  };

  explicit HttpResponseParser(HttpParserLimits limits = {}) : limits_(limits) {}

  // Starts on a new response. `head_request`: it answers a HEAD request, so it has no body whatever its
  // headers say.
  void reset(bool head_request = false);
  // Parses from the start of `in` up to the first event (or the end of `in`).
  Step next(std::string_view in);
  // The connection ended (the peer closed it): completes a body delimited by the close, and is an error
  // for a response that is not complete (error() says how far it got). kComplete once already complete.
  Step finish();

  const HttpResponseHead& head() const { return head_; }
  const std::vector<HttpHeader>& trailers() const { return trailers_; }
  const std::string& error() const { return error_; }
  // Any byte of this response arrived (so a failure now is not "the server closed an idle connection").
  bool started() const { return started_; }
  bool head_done() const { return state_ > State::kHeaderLine && state_ != State::kError; }
  bool complete() const { return state_ == State::kDone; }
  bool failed() const { return state_ == State::kError; }
  // After kComplete: the connection may carry another request (keep-alive, the body's end was known
  // without the close, and nothing made the framing doubtful).
  bool reusable() const { return state_ == State::kDone && head_.keep_alive && !close_after_; }
  uint64_t body_bytes() const { return body_bytes_; }

 private:
  enum class State {
    kStatusLine,
    kHeaderLine,
    kEnding,       // the body (if any) is over: the next step completes
    kBodyLength,   // Content-Length bytes remain
    kBodyClose,    // until the connection ends
    kChunkSize,
    kChunkData,
    kChunkDataCr,  // the CRLF after a chunk's data
    kChunkDataLf,
    kTrailer,
    kDone,
    kError,
  };
  Step fail(std::string msg, size_t consumed);
  // Appends the bytes of `in` up to and including the next LF to line_; true with `used` when the line
  // is complete (line_ then holds it without the CRLF or LF).
  bool take_line(std::string_view in, size_t limit, size_t& used, bool& too_long);
  // Each returns an error message, or empty.
  std::string on_status_line();
  std::string on_header_line(std::vector<HttpHeader>& into, size_t& lines);
  std::string on_head_end();
  std::string on_chunk_size_line();

  HttpParserLimits limits_;
  State state_ = State::kStatusLine;
  bool head_request_ = false;
  bool started_ = false;
  bool close_after_ = false;  // framing was doubtful (Transfer-Encoding with Content-Length)
  HttpResponseHead head_;
  std::vector<HttpHeader> trailers_;
  std::string line_;
  size_t section_bytes_ = 0;  // of the current head (or trailer section), for the size limit
  size_t header_lines_ = 0;
  size_t trailer_lines_ = 0;
  unsigned interim_ = 0;
  uint64_t remaining_ = 0;  // of the Content-Length body or the current chunk
  uint64_t body_bytes_ = 0;
  std::string error_;
};

}  // namespace tern::store
