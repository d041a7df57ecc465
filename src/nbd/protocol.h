// The NBD wire protocol (the subset tern speaks, from the NBD protocol specification): constants,
// big-endian codecs, and pure functions that parse what a client sends and build what the server
// answers. Nothing here touches a socket or a device, so the fuzzer (tests/fuzz/nbd_fuzz.cc) and the
// unit tests drive exactly the code the server runs.
//
// Subset: fixed newstyle negotiation only; options EXPORT_NAME, ABORT, LIST, INFO, GO (every other option,
// STARTTLS and STRUCTURED_REPLY included, is answered NBD_REP_ERR_UNSUP); simple replies only; commands
// READ, WRITE, DISC, FLUSH, TRIM, WRITE_ZEROES. docs/design/nbd.md has the reasoning.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace tern::nbd::proto {

// --- magics ---
inline constexpr uint64_t kInitMagic = 0x4e42444d41474943ull;      // "NBDMAGIC"
inline constexpr uint64_t kOptMagic = 0x49484156454F5054ull;       // "IHAVEOPT"
inline constexpr uint64_t kOptReplyMagic = 0x3e889045565a9ull;
inline constexpr uint32_t kRequestMagic = 0x25609513u;
inline constexpr uint32_t kSimpleReplyMagic = 0x67446698u;

// --- handshake flags (server, 16 bits) and client flags (32 bits) ---
inline constexpr uint16_t kFlagFixedNewstyle = 1u << 0;
inline constexpr uint16_t kFlagNoZeroes = 1u << 1;
inline constexpr uint32_t kClientFixedNewstyle = 1u << 0;
inline constexpr uint32_t kClientNoZeroes = 1u << 1;

// --- transmission flags (16 bits) ---
inline constexpr uint16_t kTxHasFlags = 1u << 0;
inline constexpr uint16_t kTxReadOnly = 1u << 1;
inline constexpr uint16_t kTxSendFlush = 1u << 2;
inline constexpr uint16_t kTxSendFua = 1u << 3;
inline constexpr uint16_t kTxRotational = 1u << 4;
inline constexpr uint16_t kTxSendTrim = 1u << 5;
inline constexpr uint16_t kTxSendWriteZeroes = 1u << 6;
inline constexpr uint16_t kTxSendDf = 1u << 7;
inline constexpr uint16_t kTxCanMultiConn = 1u << 8;
inline constexpr uint16_t kTxSendFastZero = 1u << 11;

// --- options ---
inline constexpr uint32_t kOptExportName = 1;
inline constexpr uint32_t kOptAbort = 2;
inline constexpr uint32_t kOptList = 3;
inline constexpr uint32_t kOptStartTls = 5;
inline constexpr uint32_t kOptInfo = 6;
inline constexpr uint32_t kOptGo = 7;
inline constexpr uint32_t kOptStructuredReply = 8;
const char* option_name(uint32_t opt);  // "GO", "STARTTLS", ... or "unknown"

// --- option replies ---
inline constexpr uint32_t kRepAck = 1;
inline constexpr uint32_t kRepServer = 2;
inline constexpr uint32_t kRepInfo = 3;
inline constexpr uint32_t kRepErrUnsup = 0x80000001u;
inline constexpr uint32_t kRepErrPolicy = 0x80000002u;
inline constexpr uint32_t kRepErrInvalid = 0x80000003u;
inline constexpr uint32_t kRepErrUnknown = 0x80000006u;
inline constexpr uint32_t kRepErrShutdown = 0x80000007u;

// --- NBD_REP_INFO types ---
inline constexpr uint16_t kInfoExport = 0;
inline constexpr uint16_t kInfoName = 1;
inline constexpr uint16_t kInfoDescription = 2;
inline constexpr uint16_t kInfoBlockSize = 3;

// --- commands and command flags ---
inline constexpr uint16_t kCmdRead = 0;
inline constexpr uint16_t kCmdWrite = 1;
inline constexpr uint16_t kCmdDisc = 2;
inline constexpr uint16_t kCmdFlush = 3;
inline constexpr uint16_t kCmdTrim = 4;
inline constexpr uint16_t kCmdWriteZeroes = 6;
inline constexpr uint16_t kCmdFlagFua = 1u << 0;
inline constexpr uint16_t kCmdFlagNoHole = 1u << 1;
const char* command_name(uint16_t type);  // "READ", ... or "unknown"

// --- error values in replies (fixed by the specification, equal to Linux errno values) ---
inline constexpr uint32_t kEPerm = 1;
inline constexpr uint32_t kEIo = 5;
inline constexpr uint32_t kEInval = 22;
inline constexpr uint32_t kENoSpc = 28;
inline constexpr uint32_t kENotSup = 95;
inline constexpr uint32_t kEShutdown = 108;
// A device result as the NBD error a client understands.
uint32_t error_from_errc(Errc e);

// --- sizes and limits ---
inline constexpr size_t kGreetingLen = 18;       // NBDMAGIC, IHAVEOPT, handshake flags
inline constexpr size_t kOptionHeaderLen = 16;   // IHAVEOPT, option, length
inline constexpr size_t kRequestLen = 28;
inline constexpr size_t kSimpleReplyLen = 16;
inline constexpr size_t kMaxNameLen = 4096;      // the specification's limit for strings
// Longest option payload read: a maximal name plus a generous list of information requests. Anything
// longer is treated as an attack and ends the connection (the specification allows a hard disconnect).
inline constexpr size_t kMaxOptionLen = 4 + kMaxNameLen + 2 + 2 * 1024;

// --- big-endian codecs ---
inline uint16_t load_be16(const uint8_t* p) { return uint16_t(uint16_t(p[0]) << 8 | p[1]); }
inline uint32_t load_be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}
inline uint64_t load_be64(const uint8_t* p) { return uint64_t(load_be32(p)) << 32 | load_be32(p + 4); }
inline void store_be16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
inline void store_be32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (24 - 8 * i));
}
inline void store_be64(uint8_t* p, uint64_t v) {
  store_be32(p, uint32_t(v >> 32));
  store_be32(p + 4, uint32_t(v));
}

// ---------------------------------------------------------------------------------------------------
// Handshake

// The server's first 18 bytes.
void build_greeting(uint8_t out[kGreetingLen]);

// The client's 32-bit flags. Refused (the connection closes): unknown bits, and clients that do not speak
// fixed newstyle (without it, option replies would be misread).
struct ClientFlags {
  bool no_zeroes = false;
};
Result<ClientFlags> parse_client_flags(uint32_t flags);

// One option header from `n` bytes at `p`.
struct OptionHeader {
  enum class Kind { kNeedMore, kOk, kBadMagic, kTooLong };
  Kind kind = Kind::kNeedMore;
  uint32_t option = 0;
  uint32_t length = 0;
};
OptionHeader parse_option_header(const uint8_t* p, size_t n);

// The payload of NBD_OPT_INFO / NBD_OPT_GO: an export name and the information types asked for.
struct InfoQuery {
  std::string_view name;
  bool want_name = false;
  bool want_description = false;
  bool want_block_size = false;
};
// kInval (with a message for NBD_REP_ERR_INVALID) when the lengths do not add up.
Result<InfoQuery> parse_info_query(const uint8_t* p, size_t n);

// What the server knows about an export when it answers an option.
struct ExportDesc {
  std::string name;
  std::string description;
  uint64_t size = 0;
  uint16_t tx_flags = 0;
  uint32_t min_block = 1;
  uint32_t preferred_block = 4096;
  uint32_t max_block = 32u << 20;
};

// Option replies, appended to `out` (the handshake is a control path; it may allocate).
void append_option_reply(std::vector<uint8_t>& out, uint32_t opt, uint32_t type, const void* data = nullptr,
                         size_t len = 0);
void append_option_error(std::vector<uint8_t>& out, uint32_t opt, uint32_t type, std::string_view message);
void append_server_entry(std::vector<uint8_t>& out, std::string_view name);  // NBD_REP_SERVER for LIST
// The NBD_REP_INFO replies for a successful INFO/GO: EXPORT always, BLOCK_SIZE always (so clients that did
// not ask still learn the alignment the server enforces), NAME and DESCRIPTION when asked for. The caller
// appends the final NBD_REP_ACK.
void append_info_replies(std::vector<uint8_t>& out, uint32_t opt, const InfoQuery& q, const ExportDesc& e);
// The answer to NBD_OPT_EXPORT_NAME: size, transmission flags, and 124 zero bytes unless NO_ZEROES.
void append_export_name_reply(std::vector<uint8_t>& out, const ExportDesc& e, bool no_zeroes);

// ---------------------------------------------------------------------------------------------------
// Transmission

struct Request {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
};
// Parses kRequestLen bytes; false when the magic is wrong (the stream cannot be trusted any more).
bool parse_request(const uint8_t* p, Request* r);

// The export as the transmission phase sees it.
struct Geometry {
  uint64_t size = 0;            // bytes
  uint32_t block_size = 512;    // minimum block size: offsets and lengths must be multiples of it
  uint32_t max_payload = 32u << 20;  // longest READ or WRITE
  bool read_only = false;
};

// What to do with a request header. Decided before any resource is taken, so a bad request costs
// nothing but its reply.
struct Verdict {
  enum class Action : uint8_t {
    kExecute,  // run it
    kReply,    // answer `error` without touching the device (error may be 0: a zero-length no-op)
    kDisc,     // NBD_CMD_DISC: finish what is in flight, then close
    kClose,    // a request that cannot be answered safely: log `why` and close the connection
  };
  Action action = Action::kExecute;
  uint32_t error = 0;
  // WRITE payload bytes that follow the header and must be read (into buffers, or discarded).
  uint32_t payload = 0;
  const char* why = "";
};
Verdict check_request(const Request& r, const Geometry& g);

// A simple reply header (kSimpleReplyLen bytes).
void build_simple_reply(uint8_t* out, uint32_t error, uint64_t cookie);

// ---------------------------------------------------------------------------------------------------
// Option handling as a whole: what an option needs looked up, and the answer once it is.

// The server answers an option in two steps because the export table lives on the primary reactor:
// plan_option says what to fetch (nothing, one export by name, or the list of names); answer_option
// turns the option and what was fetched into reply bytes and the connection's next state.
struct OptionPlan {
  enum class Need { kNothing, kExport, kList };
  Need need = Need::kNothing;
  std::string name;  // kExport: the export asked for
};
OptionPlan plan_option(uint32_t opt, const uint8_t* data, size_t len);

struct OptionLookup {
  bool found = false;  // kExport: the export exists (and, for GO/EXPORT_NAME, the client is attached)
  ExportDesc desc;
  std::vector<std::string> names;  // kList
};

struct OptionOutcome {
  enum class Next : uint8_t {
    kOptions,       // more options may follow
    kTransmission,  // GO / EXPORT_NAME succeeded: requests follow the reply
    kCloseAfterReply,  // ABORT: send the reply, then close
    kClose,            // close now (EXPORT_NAME of an unknown export: it cannot be answered with an error)
  };
  Next next = Next::kOptions;
  const char* log = "";  // why, for kClose
};
OptionOutcome answer_option(uint32_t opt, const uint8_t* data, size_t len, const ClientFlags& cf,
                            const OptionLookup& lookup, std::vector<uint8_t>& out);

}  // namespace tern::nbd::proto
