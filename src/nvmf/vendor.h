// tern's vendor-specific admin commands: how a nexus asks the engine behind a remote child for a snapshot
// of the replica that child's namespace exposes, on the NVMe/TCP connection it already holds (design:
// docs/design/nexus.md, "Snapshots").
//
// NVMe reserves admin opcodes C0h-FFh for vendors; bits 1:0 of an opcode give its data direction, so
// both of ours carry data from host to controller (01b). The command names the namespace (NSID); the
// data is a SnapshotCommand. The target checks the namespace and the host's reservation access (a
// snapshot counts as a write: a fenced nexus cannot take one) and hands the command to whoever
// registered for the opcode (the engine). Failures come back with status code type 7 (vendor specific)
// and the errno as status code, so the caller can say what went wrong on the other side.
//
// Threads: none of its own; plain functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/uuid.h"
#include "nvmf/le.h"
#include "nvmf/spec.h"

namespace tern::nvmf::vendor {

// Takes a snapshot of the namespace's replica. Success: CQE DW0 bit 0 set when the identical snapshot
// (same UUID, name and source) was there already.
inline constexpr uint8_t kSnapshot = 0xC1;
// Destroys a snapshot of the namespace's replica (by UUID; the name is ignored). Only a snapshot whose
// source is that replica: anything else is refused. Already gone: success.
inline constexpr uint8_t kDropSnapshot = 0xC5;

// Which blocks of the namespace are allocated (a thin replica's unwritten clusters are not), from the
// block in CDW10 (low) / CDW11 (high), for at most CDW12 blocks (1..2^32-1): the reply data (controller
// to host: bits 1:0 = 10b) is a BlockStatusWire for the run of blocks that share the first block's
// state. Answered by the target itself from the namespace's device (Bdev::block_status); INVALID
// FIELD for a device that cannot tell. A read, for the reservation rules. A rebuild copies only what
// its source has allocated.
inline constexpr uint8_t kBlockStatus = 0xC2;

inline constexpr uint32_t kSnapshotMagic = 0x504e5354;  // "TSNP" little-endian
inline constexpr uint16_t kSnapshotVersion = 1;
inline constexpr size_t kMaxSnapshotName = 255;

// The data of both commands (256 + 32 bytes, little-endian).
struct SnapshotCommandWire {
  nvme::le32 magic;
  nvme::le16 version;
  nvme::le16 name_len;
  uint8_t uuid[16];
  uint8_t reserved[8];
  char name[256];
};
static_assert(sizeof(SnapshotCommandWire) == 288);

struct SnapshotCommand {
  Uuid uuid;         // the snapshot's UUID (never nil)
  std::string name;  // its name (1..255 bytes, no NUL)
};

std::vector<uint8_t> encode(const SnapshotCommand& c);
// kInval with a reason for anything that is not a well-formed SnapshotCommand (the bytes come from the
// network).
Result<SnapshotCommand> decode_snapshot_command(const uint8_t* data, size_t len);

inline constexpr uint32_t kBlockStatusMagic = 0x54534254;  // "TBST" little-endian
inline constexpr uint16_t kBlockStatusVersion = 1;

struct BlockStatusWire {
  nvme::le32 magic;
  nvme::le16 version;
  uint8_t allocated;  // 1: the run is allocated, 0: it reads as zeros
  uint8_t reserved;
  nvme::le64 blocks;  // the run's length from the first block asked for
};
static_assert(sizeof(BlockStatusWire) == 16);

struct BlockStatusReply {
  bool allocated = true;
  uint64_t blocks = 0;
};
std::vector<uint8_t> encode(const BlockStatusReply& r);
// kInval for anything that is not a well-formed reply, or a run that is empty or longer than `asked`
// (the bytes come from the network).
Result<BlockStatusReply> decode_block_status(const uint8_t* data, size_t len, uint64_t asked);

// How a handler's error travels back: SCT 7, SC = the errno when it fits in 8 bits (EIO otherwise).
nvme::CmdStatus status_for(Errc e);
// The error a vendor status stands for (kIo for a generic or other failure); kOk for success.
Errc errc_of(const nvme::CmdStatus& s);

}  // namespace tern::nvmf::vendor
