// NVMe/TCP transport (TP 8000, NVMe/TCP Transport Specification 1.0) PDU formats.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nvmf/spec.h"

namespace tern::nvme::tcp {

enum class PduType : uint8_t {
  kICReq = 0x00,
  kICResp = 0x01,
  kH2CTermReq = 0x02,
  kC2HTermReq = 0x03,
  kCapsuleCmd = 0x04,
  kCapsuleResp = 0x05,
  kH2CData = 0x06,
  kC2HData = 0x07,
  kR2T = 0x09,
};

// Common header flags.
inline constexpr uint8_t kFlagHdgst = 0x01;
inline constexpr uint8_t kFlagDdgst = 0x02;
inline constexpr uint8_t kFlagLastPdu = 0x04;  // H2CData / C2HData
inline constexpr uint8_t kFlagSuccess = 0x08;  // C2HData: no CapsuleResp follows

inline constexpr size_t kDigestLen = 4;
inline constexpr uint32_t kMinMaxH2CData = 4096;
inline constexpr size_t kMaxTermReqData = 128;  // a TermReq carries at most 128 bytes of the bad PDU

struct CommonHeader {
  PduType type;
  uint8_t flags;
  uint8_t hlen;  // header length, without the header digest
  uint8_t pdo;   // PDU data offset from the start of the PDU (0 if no data)
  le32 plen;     // total PDU length including header, digests and padding
};
static_assert(sizeof(CommonHeader) == 8);

// Fills the common header at the start of a PDU being built in `p`.
inline void set_header(uint8_t* p, PduType type, uint8_t flags, uint8_t hlen, uint8_t pdo, uint32_t plen) {
  auto* ch = reinterpret_cast<CommonHeader*>(p);
  ch->type = type;
  ch->flags = flags;
  ch->hlen = hlen;
  ch->pdo = pdo;
  ch->plen = plen;
}

struct ICReq {
  CommonHeader ch;
  le16 pfv;       // 0 = version 1.0
  uint8_t hpda;   // host PDU data alignment, in dwords, 0's based (0..31)
  uint8_t dgst;   // bit 0 HDGST_ENABLE, bit 1 DDGST_ENABLE
  le32 maxr2t;    // 0's based
  uint8_t rsvd[112];
};
static_assert(sizeof(ICReq) == 128);
static_assert(offsetof(ICReq, hpda) == 10 && offsetof(ICReq, maxr2t) == 12);

struct ICResp {
  CommonHeader ch;
  le16 pfv;
  uint8_t cpda;   // controller PDU data alignment
  uint8_t dgst;
  le32 maxh2cdata;
  uint8_t rsvd[112];
};
static_assert(sizeof(ICResp) == 128);

struct TermReq {  // H2CTermReq and C2HTermReq
  CommonHeader ch;
  le16 fes;
  le32 fei;
  uint8_t rsvd[10];
  // followed by up to 128 bytes of the offending PDU header
};
static_assert(sizeof(TermReq) == 24);
static_assert(offsetof(TermReq, fes) == 8 && offsetof(TermReq, fei) == 10);

enum class Fes : uint16_t {
  kInvalidHeaderField = 0x01,
  kPduSequenceError = 0x02,
  kHeaderDigestError = 0x03,
  kDataTransferOutOfRange = 0x04,
  kDataTransferLimitExceeded = 0x05,  // also "R2T limit exceeded"
  kUnsupportedParameter = 0x06,
};

struct CapsuleCmd {
  CommonHeader ch;
  Sqe sqe;
};
static_assert(sizeof(CapsuleCmd) == 72);

struct CapsuleResp {
  CommonHeader ch;
  Cqe cqe;
};
static_assert(sizeof(CapsuleResp) == 24);

struct DataHeader {  // H2CData and C2HData
  CommonHeader ch;
  le16 cccid;
  le16 ttag;   // H2CData: the R2T's transfer tag; C2HData: reserved
  le32 datao;  // offset of this PDU's data within the command's data
  le32 datal;
  uint8_t rsvd[4];
};
static_assert(sizeof(DataHeader) == 24);
static_assert(offsetof(DataHeader, cccid) == 8 && offsetof(DataHeader, datao) == 12 &&
              offsetof(DataHeader, datal) == 16);

struct R2T {
  CommonHeader ch;
  le16 cccid;
  le16 ttag;
  le32 r2to;
  le32 r2tl;
  uint8_t rsvd[4];
};
static_assert(sizeof(R2T) == 24);

// Header length each PDU type must carry.
inline constexpr uint8_t expected_hlen(PduType t) {
  switch (t) {
    case PduType::kICReq:
    case PduType::kICResp: return 128;
    case PduType::kH2CTermReq:
    case PduType::kC2HTermReq: return 24;
    case PduType::kCapsuleCmd: return 72;
    case PduType::kCapsuleResp: return 24;
    case PduType::kH2CData:
    case PduType::kC2HData:
    case PduType::kR2T: return 24;
  }
  return 0;
}

// Whether a PDU type may carry a header digest once digests are negotiated (IC PDUs never do; TermReqs
// do not either).
inline constexpr bool may_have_hdgst(PduType t) {
  return t == PduType::kCapsuleCmd || t == PduType::kCapsuleResp || t == PduType::kH2CData ||
         t == PduType::kC2HData || t == PduType::kR2T;
}

}  // namespace tern::nvme::tcp
