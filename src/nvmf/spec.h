// NVMe Base 2.0 and NVMe over Fabrics 1.1 wire structures used by the target and the initiator.
// Every structure is byte-packed with little-endian fields (le.h) and checked against the
// specification's sizes and offsets at compile time. Field names follow the specification's
// mnemonics so the code can be read next to it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nvmf/le.h"

namespace tern::nvme {

// ------------------------------------------------------------------------------------------------
// Submission and completion queue entries

// SGL descriptor in DPTR (NVMe-oF uses SGLs only).
struct SglDesc {
  le64 addr;
  le32 length;
  uint8_t rsvd[3];
  uint8_t type;  // descriptor type (bits 7:4) and subtype (bits 3:0)
};
static_assert(sizeof(SglDesc) == 16);

inline constexpr uint8_t kSglDataBlockOffset = 0x01;     // in-capsule data: Data Block, subtype Offset
inline constexpr uint8_t kSglTransportDataBlock = 0x5A;  // data moved by the transport (R2T / C2HData)

struct Sqe {
  uint8_t opc;
  uint8_t flags;  // FUSE bits 1:0, PSDT bits 7:6 (fabrics: must be 10b = SGL)
  le16 cid;
  le32 nsid;
  le32 cdw2;
  le32 cdw3;
  le64 mptr;
  SglDesc sgl1;
  le32 cdw10, cdw11, cdw12, cdw13, cdw14, cdw15;
};
static_assert(sizeof(Sqe) == 64);
static_assert(offsetof(Sqe, sgl1) == 24);
static_assert(offsetof(Sqe, cdw10) == 40);

// Fabrics commands overlay the SQE: opcode 0x7F, FCTYPE in byte 4.
struct FabricsCmd {
  uint8_t opc;
  uint8_t rsvd1;
  le16 cid;
  uint8_t fctype;
  uint8_t rsvd2[19];
  SglDesc sgl1;
  uint8_t specific[24];
};
static_assert(sizeof(FabricsCmd) == 64);

struct ConnectCmd {
  uint8_t opc;
  uint8_t rsvd1;
  le16 cid;
  uint8_t fctype;
  uint8_t rsvd2[19];
  SglDesc sgl1;
  le16 recfmt;
  le16 qid;
  le16 sqsize;  // 0's based
  uint8_t cattr;
  uint8_t rsvd3;
  le32 kato;  // milliseconds
  uint8_t rsvd4[12];
};
static_assert(sizeof(ConnectCmd) == 64);
static_assert(offsetof(ConnectCmd, recfmt) == 40 && offsetof(ConnectCmd, kato) == 48);

struct ConnectData {
  uint8_t hostid[16];
  le16 cntlid;
  uint8_t rsvd1[238];
  char subnqn[256];
  char hostnqn[256];
  uint8_t rsvd2[256];
};
static_assert(sizeof(ConnectData) == 1024);
static_assert(offsetof(ConnectData, subnqn) == 256 && offsetof(ConnectData, hostnqn) == 512);

struct PropertyCmd {  // Property Get and Property Set
  uint8_t opc;
  uint8_t rsvd1;
  le16 cid;
  uint8_t fctype;
  uint8_t rsvd2[35];
  uint8_t attrib;  // bits 2:0: 0 = 4 bytes, 1 = 8 bytes
  uint8_t rsvd3[3];
  le32 ofst;
  le64 value;  // Property Set only
  uint8_t rsvd4[8];
};
static_assert(sizeof(PropertyCmd) == 64);
static_assert(offsetof(PropertyCmd, attrib) == 40 && offsetof(PropertyCmd, ofst) == 44 &&
              offsetof(PropertyCmd, value) == 48);

struct Cqe {
  le32 dw0;
  le32 dw1;
  le16 sqhd;
  le16 sqid;
  le16 cid;
  le16 status;  // P bit 0, SC bits 8:1, SCT bits 11:9, CRD 13:12, M bit 14, DNR bit 15
};
static_assert(sizeof(Cqe) == 16);
static_assert(offsetof(Cqe, status) == 14);

// ------------------------------------------------------------------------------------------------
// Opcodes

namespace opc {
// Admin
inline constexpr uint8_t kGetLogPage = 0x02;
inline constexpr uint8_t kIdentify = 0x06;
inline constexpr uint8_t kAbort = 0x08;
inline constexpr uint8_t kSetFeatures = 0x09;
inline constexpr uint8_t kGetFeatures = 0x0A;
inline constexpr uint8_t kAsyncEventRequest = 0x0C;
inline constexpr uint8_t kKeepAlive = 0x18;
inline constexpr uint8_t kFabrics = 0x7F;
// NVM command set
inline constexpr uint8_t kFlush = 0x00;
inline constexpr uint8_t kWrite = 0x01;
inline constexpr uint8_t kRead = 0x02;
inline constexpr uint8_t kCompare = 0x05;
inline constexpr uint8_t kWriteZeroes = 0x08;
inline constexpr uint8_t kDatasetManagement = 0x09;
inline constexpr uint8_t kReservationRegister = 0x0D;
inline constexpr uint8_t kReservationReport = 0x0E;
inline constexpr uint8_t kReservationAcquire = 0x11;
inline constexpr uint8_t kReservationRelease = 0x15;
}  // namespace opc

namespace fctype {
inline constexpr uint8_t kPropertySet = 0x00;
inline constexpr uint8_t kConnect = 0x01;
inline constexpr uint8_t kPropertyGet = 0x04;
inline constexpr uint8_t kAuthSend = 0x05;
inline constexpr uint8_t kAuthRecv = 0x06;
inline constexpr uint8_t kDisconnect = 0x08;
}  // namespace fctype

// Data transfer direction of an opcode (bits 1:0): 01 host to controller, 10 controller to host.
inline bool opc_writes_data(uint8_t o) { return (o & 3) == 1; }
inline bool opc_reads_data(uint8_t o) { return (o & 3) == 2; }

// ------------------------------------------------------------------------------------------------
// Status

enum class Sct : uint8_t { kGeneric = 0, kCommandSpecific = 1, kMedia = 2, kPath = 3, kVendor = 7 };

struct CmdStatus {
  Sct sct = Sct::kGeneric;
  uint8_t sc = 0;
  bool dnr = false;
  uint8_t crd = 0;

  static constexpr CmdStatus Ok() { return {}; }
  static constexpr CmdStatus Generic(uint8_t sc, bool dnr = true) { return {Sct::kGeneric, sc, dnr, 0}; }
  static constexpr CmdStatus Specific(uint8_t sc, bool dnr = true) { return {Sct::kCommandSpecific, sc, dnr, 0}; }
  static constexpr CmdStatus Media(uint8_t sc, bool dnr = true) { return {Sct::kMedia, sc, dnr, 0}; }
  static constexpr CmdStatus Path(uint8_t sc, bool dnr = false) { return {Sct::kPath, sc, dnr, 0}; }
  bool ok() const { return sct == Sct::kGeneric && sc == 0; }
  uint16_t encode() const {  // without the phase bit
    return uint16_t((uint16_t(sc) << 1) | (uint16_t(sct) << 9) | (uint16_t(crd & 3) << 12) | (dnr ? 0x8000 : 0));
  }
  static CmdStatus decode(uint16_t s) {
    return {Sct((s >> 9) & 7), uint8_t((s >> 1) & 0xff), bool(s & 0x8000), uint8_t((s >> 12) & 3)};
  }
  friend bool operator==(const CmdStatus& a, const CmdStatus& b) { return a.sct == b.sct && a.sc == b.sc; }
};

namespace sc {
// Generic (SCT 0)
inline constexpr uint8_t kSuccess = 0x00;
inline constexpr uint8_t kInvalidOpcode = 0x01;
inline constexpr uint8_t kInvalidField = 0x02;
inline constexpr uint8_t kCidConflict = 0x03;
inline constexpr uint8_t kDataTransferError = 0x04;
inline constexpr uint8_t kInternalError = 0x06;
inline constexpr uint8_t kAbortRequested = 0x07;
inline constexpr uint8_t kAbortSqDeleted = 0x08;
inline constexpr uint8_t kInvalidNamespace = 0x0B;
inline constexpr uint8_t kCommandSequenceError = 0x0C;
inline constexpr uint8_t kDataSglLengthInvalid = 0x0F;
inline constexpr uint8_t kSglDescriptorTypeInvalid = 0x11;
inline constexpr uint8_t kSglOffsetInvalid = 0x16;
inline constexpr uint8_t kHostIdInconsistentFormat = 0x18;
inline constexpr uint8_t kKeepAliveExpired = 0x19;
inline constexpr uint8_t kKeepAliveInvalid = 0x1A;
inline constexpr uint8_t kAbortedPreemptAbort = 0x1B;
inline constexpr uint8_t kNamespaceWriteProtected = 0x20;
inline constexpr uint8_t kTransientTransportError = 0x22;  // e.g. a data digest error (NVMe/TCP)
inline constexpr uint8_t kLbaOutOfRange = 0x80;
inline constexpr uint8_t kCapacityExceeded = 0x81;
inline constexpr uint8_t kNamespaceNotReady = 0x82;
inline constexpr uint8_t kReservationConflict = 0x83;
// Command specific (SCT 1)
inline constexpr uint8_t kInvalidQueueIdentifier = 0x01;
inline constexpr uint8_t kAbortCommandLimitExceeded = 0x03;
inline constexpr uint8_t kAsyncEventLimitExceeded = 0x05;
inline constexpr uint8_t kInvalidLogPage = 0x09;
inline constexpr uint8_t kFeatureNotSaveable = 0x0D;
inline constexpr uint8_t kFeatureNotChangeable = 0x0E;
inline constexpr uint8_t kConnectIncompatibleFormat = 0x80;
inline constexpr uint8_t kConnectControllerBusy = 0x81;
inline constexpr uint8_t kConnectInvalidParameters = 0x82;
inline constexpr uint8_t kConnectRestartDiscovery = 0x83;
inline constexpr uint8_t kConnectInvalidHost = 0x84;
inline constexpr uint8_t kInvalidQueueType = 0x85;  // fabrics: Disconnect or Property Get/Set on the wrong queue
// Media and data integrity (SCT 2)
inline constexpr uint8_t kWriteFault = 0x80;
inline constexpr uint8_t kUnrecoveredReadError = 0x81;
inline constexpr uint8_t kCompareFailure = 0x85;
// Path related (SCT 3)
inline constexpr uint8_t kInternalPathError = 0x00;
inline constexpr uint8_t kAnaPersistentLoss = 0x01;
inline constexpr uint8_t kAnaInaccessible = 0x02;
inline constexpr uint8_t kAnaTransition = 0x03;
inline constexpr uint8_t kHostAbortedCommand = 0x71;
}  // namespace sc

// ------------------------------------------------------------------------------------------------
// Controller properties (fabrics "registers")

namespace prop {
inline constexpr uint32_t kCap = 0x00;   // 8 bytes
inline constexpr uint32_t kVs = 0x08;    // 4 bytes
inline constexpr uint32_t kCc = 0x14;    // 4 bytes
inline constexpr uint32_t kCsts = 0x1C;  // 4 bytes
inline constexpr uint32_t kNssr = 0x20;  // 4 bytes
}  // namespace prop

inline constexpr uint32_t kCcEn = 1u << 0;
inline constexpr uint32_t kCcShnShift = 14;  // 01 normal, 10 abrupt
inline constexpr uint32_t kCstsRdy = 1u << 0;
inline constexpr uint32_t kCstsCfs = 1u << 1;
inline constexpr uint32_t kCstsShstShift = 2;  // 00 normal, 01 occurring, 10 complete

// ------------------------------------------------------------------------------------------------
// Identify (CNS values and data structures)

namespace cns {
inline constexpr uint8_t kNamespace = 0x00;
inline constexpr uint8_t kController = 0x01;
inline constexpr uint8_t kActiveNamespaceList = 0x02;
inline constexpr uint8_t kNamespaceIdDescriptors = 0x03;
}  // namespace cns

struct PowerStateDesc {
  uint8_t bytes[32];
};

struct IdentifyController {
  le16 vid;               // 0
  le16 ssvid;             // 2
  char sn[20];            // 4
  char mn[40];            // 24
  char fr[8];             // 64
  uint8_t rab;            // 72
  uint8_t ieee[3];        // 73
  uint8_t cmic;           // 76
  uint8_t mdts;           // 77
  le16 cntlid;            // 78
  le32 ver;               // 80
  le32 rtd3r;             // 84
  le32 rtd3e;             // 88
  le32 oaes;              // 92
  le32 ctratt;            // 96
  le16 rrls;              // 100
  uint8_t rsvd102[9];     // 102
  uint8_t cntrltype;      // 111
  uint8_t fguid[16];      // 112
  le16 crdt1, crdt2, crdt3;  // 128
  uint8_t rsvd134[119];   // 134
  uint8_t nvmsr;          // 253
  uint8_t vwci;           // 254
  uint8_t mec;            // 255
  le16 oacs;              // 256
  uint8_t acl;            // 258
  uint8_t aerl;           // 259
  uint8_t frmw;           // 260
  uint8_t lpa;            // 261
  uint8_t elpe;           // 262
  uint8_t npss;           // 263
  uint8_t avscc;          // 264
  uint8_t apsta;          // 265
  le16 wctemp;            // 266
  le16 cctemp;            // 268
  le16 mtfa;              // 270
  le32 hmpre;             // 272
  le32 hmmin;             // 276
  uint8_t tnvmcap[16];    // 280
  uint8_t unvmcap[16];    // 296
  le32 rpmbs;             // 312
  le16 edstt;             // 316
  uint8_t dsto;           // 318
  uint8_t fwug;           // 319
  le16 kas;               // 320 (granularity of the keep-alive timer, 100 ms units)
  le16 hctma;             // 322
  le16 mntmt;             // 324
  le16 mxtmt;             // 326
  le32 sanicap;           // 328
  le32 hmminds;           // 332
  le16 hmmaxd;            // 336
  le16 nsetidmax;         // 338
  le16 endgidmax;         // 340
  uint8_t anatt;          // 342
  uint8_t anacap;         // 343
  le32 anagrpmax;         // 344
  le32 nanagrpid;         // 348
  le32 pels;              // 352
  uint8_t rsvd356[156];   // 356
  uint8_t sqes;           // 512
  uint8_t cqes;           // 513
  le16 maxcmd;            // 514
  le32 nn;                // 516
  le16 oncs;              // 520
  le16 fuses;             // 522
  uint8_t fna;            // 524
  uint8_t vwc;            // 525
  le16 awun;              // 526
  le16 awupf;             // 528
  uint8_t icsvscc;        // 530
  uint8_t nwpc;           // 531
  le16 acwu;              // 532
  le16 ocfs;              // 534
  le32 sgls;              // 536
  le32 mnan;              // 540
  uint8_t rsvd544[224];   // 544
  char subnqn[256];       // 768
  uint8_t rsvd1024[768];  // 1024
  le32 ioccsz;            // 1792 (16-byte units, includes the 64-byte SQE)
  le32 iorcsz;            // 1796
  le16 icdoff;            // 1800
  uint8_t fcatt;          // 1802
  uint8_t msdbd;          // 1803
  le16 ofcs;              // 1804
  uint8_t rsvd1806[242];  // 1806
  PowerStateDesc psd[32]; // 2048
  uint8_t vs[1024];       // 3072
};
static_assert(sizeof(IdentifyController) == 4096);
static_assert(offsetof(IdentifyController, cntlid) == 78);
static_assert(offsetof(IdentifyController, oaes) == 92);
static_assert(offsetof(IdentifyController, cntrltype) == 111);
static_assert(offsetof(IdentifyController, oacs) == 256);
static_assert(offsetof(IdentifyController, kas) == 320);
static_assert(offsetof(IdentifyController, anatt) == 342);
static_assert(offsetof(IdentifyController, anagrpmax) == 344);
static_assert(offsetof(IdentifyController, sqes) == 512);
static_assert(offsetof(IdentifyController, nn) == 516);
static_assert(offsetof(IdentifyController, sgls) == 536);
static_assert(offsetof(IdentifyController, subnqn) == 768);
static_assert(offsetof(IdentifyController, ioccsz) == 1792);
static_assert(offsetof(IdentifyController, msdbd) == 1803);
static_assert(offsetof(IdentifyController, psd) == 2048);

struct LbaFormat {
  le16 ms;
  uint8_t lbads;  // log2 of the data size
  uint8_t rp;
};
static_assert(sizeof(LbaFormat) == 4);

struct IdentifyNamespace {
  le64 nsze;              // 0
  le64 ncap;              // 8
  le64 nuse;              // 16
  uint8_t nsfeat;         // 24
  uint8_t nlbaf;          // 25 (0's based)
  uint8_t flbas;          // 26
  uint8_t mc;             // 27
  uint8_t dpc;            // 28
  uint8_t dps;            // 29
  uint8_t nmic;           // 30
  uint8_t rescap;         // 31
  uint8_t fpi;            // 32
  uint8_t dlfeat;         // 33
  le16 nawun;             // 34
  le16 nawupf;            // 36
  le16 nacwu;             // 38
  le16 nabsn;             // 40
  le16 nabo;              // 42
  le16 nabspf;            // 44
  le16 noiob;             // 46
  uint8_t nvmcap[16];     // 48
  le16 npwg;              // 64
  le16 npwa;              // 66
  le16 npdg;              // 68
  le16 npda;              // 70
  le16 nows;              // 72
  uint8_t rsvd74[18];     // 74
  le32 anagrpid;          // 92
  uint8_t rsvd96[3];      // 96
  uint8_t nsattr;         // 99
  le16 nvmsetid;          // 100
  le16 endgid;            // 102
  uint8_t nguid[16];      // 104
  uint8_t eui64[8];       // 120
  LbaFormat lbaf[64];     // 128
  uint8_t vs[3712];       // 384
};
static_assert(sizeof(IdentifyNamespace) == 4096);
static_assert(offsetof(IdentifyNamespace, rescap) == 31);
static_assert(offsetof(IdentifyNamespace, anagrpid) == 92);
static_assert(offsetof(IdentifyNamespace, nguid) == 104);
static_assert(offsetof(IdentifyNamespace, lbaf) == 128);

// Namespace Identification Descriptor (CNS 03h): a list of these, terminated by a zero NIDT.
struct NsIdDescHeader {
  uint8_t nidt;  // 1 EUI64, 2 NGUID, 3 UUID, 4 CSI
  uint8_t nidl;
  uint8_t rsvd[2];
};
inline constexpr uint8_t kNidtEui64 = 1, kNidtNguid = 2, kNidtUuid = 3, kNidtCsi = 4;

// ------------------------------------------------------------------------------------------------
// Log pages

namespace lid {
inline constexpr uint8_t kError = 0x01;
inline constexpr uint8_t kSmart = 0x02;
inline constexpr uint8_t kFirmwareSlot = 0x03;
inline constexpr uint8_t kChangedNamespaces = 0x04;
inline constexpr uint8_t kCommandsSupported = 0x05;
inline constexpr uint8_t kAna = 0x0C;
inline constexpr uint8_t kDiscovery = 0x70;
inline constexpr uint8_t kReservationNotification = 0x80;
}  // namespace lid

struct ErrorLogEntry {
  le64 error_count;
  le16 sqid;
  le16 cid;
  le16 status;
  le16 param_error_location;
  le64 lba;
  le32 nsid;
  uint8_t vs;
  uint8_t trtype;
  uint8_t rsvd30[2];
  le64 cs;
  le16 trtype_specific;
  uint8_t rsvd42[22];
};
static_assert(sizeof(ErrorLogEntry) == 64);

struct SmartLog {
  uint8_t critical_warning;
  le16 composite_temperature;  // Kelvin
  uint8_t avail_spare;
  uint8_t avail_spare_threshold;
  uint8_t percentage_used;
  uint8_t endurance_group_critical_warning;
  uint8_t rsvd7[25];
  uint8_t data_units_read[16];  // thousands of 512-byte units
  uint8_t data_units_written[16];
  uint8_t host_read_commands[16];
  uint8_t host_write_commands[16];
  uint8_t controller_busy_time[16];
  uint8_t power_cycles[16];
  uint8_t power_on_hours[16];
  uint8_t unsafe_shutdowns[16];
  uint8_t media_errors[16];
  uint8_t num_error_log_entries[16];
  le32 warning_temp_time;
  le32 critical_temp_time;
  le16 temp_sensor[8];
  uint8_t rsvd216[296];
};
static_assert(sizeof(SmartLog) == 512);
static_assert(offsetof(SmartLog, data_units_read) == 32);
static_assert(offsetof(SmartLog, media_errors) == 160);

// 128-bit little-endian counter used in SMART.
inline void set_u128(uint8_t* f, uint64_t v) {
  for (int i = 0; i < 16; ++i) f[i] = i < 8 ? uint8_t(v >> (8 * i)) : 0;
}

struct AnaLogHeader {
  le64 chgcnt;
  le16 ngrps;
  uint8_t rsvd[6];
};
static_assert(sizeof(AnaLogHeader) == 16);

struct AnaGroupDesc {
  le32 anagrpid;
  le32 nnsids;
  le64 chgcnt;
  uint8_t state;  // bits 3:0
  uint8_t rsvd[15];
  // followed by nnsids x le32
};
static_assert(sizeof(AnaGroupDesc) == 32);

enum class AnaState : uint8_t {
  kOptimized = 0x1,
  kNonOptimized = 0x2,
  kInaccessible = 0x3,
  kPersistentLoss = 0x4,
  kChange = 0xF,
};

struct ReservationNotificationLog {
  le64 log_page_count;
  uint8_t type;  // 0 empty, 1 registration preempted, 2 reservation released, 3 reservation preempted
  uint8_t num_avail;
  uint8_t rsvd10[2];
  le32 nsid;
  uint8_t rsvd16[48];
};
static_assert(sizeof(ReservationNotificationLog) == 64);

// Discovery log page (LID 70h).
struct DiscoveryLogHeader {
  le64 genctr;
  le64 numrec;
  le16 recfmt;
  uint8_t rsvd[1006];
};
static_assert(sizeof(DiscoveryLogHeader) == 1024);

struct DiscoveryLogEntry {
  uint8_t trtype;   // 3 = TCP
  uint8_t adrfam;   // 1 IPv4, 2 IPv6
  uint8_t subtype;  // 1 referral to a discovery service, 2 NVM subsystem, 3 current discovery subsystem
  uint8_t treq;     // bits 1:0 secure channel (2 = not required)
  le16 portid;
  le16 cntlid;      // 0xFFFF: dynamic
  le16 asqsz;
  le16 eflags;
  uint8_t rsvd12[20];
  char trsvcid[32];
  uint8_t rsvd64[192];
  char subnqn[256];
  char traddr[256];
  uint8_t tsas[256];  // TCP: byte 0 = sectype (0 none)
};
static_assert(sizeof(DiscoveryLogEntry) == 1024);
static_assert(offsetof(DiscoveryLogEntry, trsvcid) == 32 && offsetof(DiscoveryLogEntry, subnqn) == 256 &&
              offsetof(DiscoveryLogEntry, traddr) == 512);

inline constexpr uint8_t kTrtypeTcp = 3;
inline constexpr uint8_t kAdrfamIpv4 = 1, kAdrfamIpv6 = 2;
inline constexpr uint8_t kSubtypeDiscoveryReferral = 1, kSubtypeNvme = 2, kSubtypeCurrentDiscovery = 3;
inline constexpr uint8_t kTreqNotSpecified = 0;
inline constexpr uint8_t kTreqNotRequired = 2;
inline constexpr uint8_t kTreqSqFlowDisable = 4;  // the host may disable SQ flow control at Connect
inline constexpr const char* kDiscoveryNqn = "nqn.2014-08.org.nvmexpress.discovery";

// ------------------------------------------------------------------------------------------------
// Features

namespace fid {
inline constexpr uint8_t kArbitration = 0x01;
inline constexpr uint8_t kPowerManagement = 0x02;
inline constexpr uint8_t kTemperatureThreshold = 0x04;
inline constexpr uint8_t kErrorRecovery = 0x05;
inline constexpr uint8_t kVolatileWriteCache = 0x06;
inline constexpr uint8_t kNumberOfQueues = 0x07;
inline constexpr uint8_t kInterruptCoalescing = 0x08;
inline constexpr uint8_t kWriteAtomicity = 0x0A;
inline constexpr uint8_t kAsyncEventConfig = 0x0B;
inline constexpr uint8_t kKeepAliveTimer = 0x0F;
inline constexpr uint8_t kHostIdentifier = 0x81;
inline constexpr uint8_t kReservationNotificationMask = 0x82;
inline constexpr uint8_t kReservationPersistence = 0x83;
}  // namespace fid

// Asynchronous event configuration bits (feature 0Bh) and event encodings.
inline constexpr uint32_t kAecNsAttrNotices = 1u << 8;
inline constexpr uint32_t kAecAnaChangeNotices = 1u << 11;
inline constexpr uint32_t kAecDiscoveryLogChange = 1u << 31;
inline constexpr uint8_t kAerTypeNotice = 0x2;
inline constexpr uint8_t kAerTypeIoCommandSpecific = 0x6;
inline constexpr uint8_t kAerInfoNsAttrChanged = 0x00;
inline constexpr uint8_t kAerInfoAnaChange = 0x03;
inline constexpr uint8_t kAerInfoDiscoveryChange = 0xF0;
inline constexpr uint8_t kAerInfoReservationLogAvailable = 0x00;
inline uint32_t aer_dw0(uint8_t type, uint8_t info, uint8_t log_id) {
  return uint32_t(type) | (uint32_t(info) << 8) | (uint32_t(log_id) << 16);
}

// ------------------------------------------------------------------------------------------------
// Reservations

enum class ResvType : uint8_t {
  kNone = 0,
  kWriteExclusive = 1,
  kExclusiveAccess = 2,
  kWriteExclusiveRegsOnly = 3,
  kExclusiveAccessRegsOnly = 4,
  kWriteExclusiveAllRegs = 5,
  kExclusiveAccessAllRegs = 6,
};

// Reservation Status data structure (Report, extended format: 128-bit host identifiers).
struct ResvStatusExtHeader {
  le32 gen;
  uint8_t rtype;
  le16 regctl;
  uint8_t rsvd7[2];
  uint8_t ptpls;
  uint8_t rsvd10[54];
};
static_assert(sizeof(ResvStatusExtHeader) == 64);
struct ResvRegisteredControllerExt {
  le16 cntlid;
  uint8_t rcsts;  // bit 0: holds the reservation
  uint8_t rsvd3[5];
  le64 rkey;
  uint8_t hostid[16];
  uint8_t rsvd32[32];
};
static_assert(sizeof(ResvRegisteredControllerExt) == 64);

// Dataset Management range.
struct DsmRange {
  le32 cattr;
  le32 nlb;
  le64 slba;
};
static_assert(sizeof(DsmRange) == 16);

}  // namespace tern::nvme
