#include "nexus/layout.h"

#include <cstring>

#include "common/crc32c.h"
#include "common/endian.h"

namespace tern::nexus {

namespace {

constexpr char kMagic[8] = {'T', 'E', 'R', 'N', 'N', 'X', 'L', '1'};

// Label byte offsets (docs/design/nexus.md, "Child layout").
constexpr size_t kOffMagic = 0;        // 8
constexpr size_t kOffVersion = 8;      // 4
constexpr size_t kOffBlockSize = 12;   // 4
constexpr size_t kOffSequence = 16;    // 8
constexpr size_t kOffNexus = 24;       // 16
constexpr size_t kOffChild = 40;       // 16
constexpr size_t kOffVolume = 56;      // 8
constexpr size_t kOffMetaOffset = 64;  // 8
constexpr size_t kOffMetaBytes = 72;   // 8
constexpr size_t kOffGeneration = 80;  // 8
constexpr size_t kOffFlags = 88;       // 4 (bit 0: in sync)
constexpr size_t kOffWritten = 96;     // 8
constexpr size_t kOffCrc = Layout::kLabelSize - 4;

}  // namespace

Result<Layout> Layout::For(uint64_t volume_bytes, uint32_t block_size) {
  if (block_size != 512 && block_size != 4096) {
    return Status::Errorf(Errc::kInval, "block size {} is not supported (512 or 4096)", block_size);
  }
  if (volume_bytes == 0) return Status(Errc::kInval, "the volume size must not be zero");
  if (volume_bytes % block_size != 0) {
    return Status::Errorf(Errc::kInval, "the volume size {} is not a multiple of the block size {}", volume_bytes,
                          block_size);
  }
  if (volume_bytes > (uint64_t(1) << 56)) return Status::Errorf(Errc::kInval, "the volume size {} is too large", volume_bytes);
  Layout l;
  l.block_size = block_size;
  l.volume_bytes = volume_bytes;
  l.meta_offset = align_up(volume_bytes, kMiB);
  // One bit per smallest region, rounded up to whole 4 KiB pages per child slot.
  const uint64_t regions = (volume_bytes + kMinRegionBytes - 1) / kMinRegionBytes;
  l.bitmap_slot_bytes = align_up<uint64_t>((regions + 7) / 8, 4096);
  l.label_a = l.meta_offset;
  l.label_b = l.meta_offset + kLabelSize;
  l.checkpoint = l.meta_offset + kCheckpointOffset;
  l.activity_log = l.meta_offset + kLabelAreaSize;
  l.bitmaps = l.activity_log + kActivityLogSize;
  l.meta_bytes = align_up(kLabelAreaSize + kActivityLogSize + kMaxChildren * l.bitmap_slot_bytes, kMiB);
  return l;
}

uint64_t required_child_bytes(uint64_t volume_bytes) {
  auto l = Layout::For(volume_bytes, 512);
  return l.ok() ? l->required_child_bytes() : 0;
}

void ChildLabel::Encode(uint8_t* out) const {
  std::memset(out, 0, Layout::kLabelSize);
  std::memcpy(out + kOffMagic, kMagic, sizeof(kMagic));
  store_le<uint32_t>(out + kOffVersion, kVersion);
  store_le<uint32_t>(out + kOffBlockSize, block_size);
  store_le<uint64_t>(out + kOffSequence, sequence);
  std::memcpy(out + kOffNexus, nexus.bytes().data(), 16);
  std::memcpy(out + kOffChild, child.bytes().data(), 16);
  store_le<uint64_t>(out + kOffVolume, volume_bytes);
  store_le<uint64_t>(out + kOffMetaOffset, meta_offset);
  store_le<uint64_t>(out + kOffMetaBytes, meta_bytes);
  store_le<uint64_t>(out + kOffGeneration, generation);
  store_le<uint32_t>(out + kOffFlags, in_sync ? 1u : 0u);
  store_le<uint64_t>(out + kOffWritten, written_ns);
  store_le<uint32_t>(out + kOffCrc, crc32c(out, kOffCrc));
}

Result<ChildLabel> ChildLabel::Decode(const uint8_t* in, std::string_view where) {
  if (std::memcmp(in + kOffMagic, kMagic, sizeof(kMagic)) != 0) {
    return Status::Errorf(Errc::kNoEnt, "no nexus label at {}", where);
  }
  if (load_le<uint32_t>(in + kOffCrc) != crc32c(in, kOffCrc)) {
    return Status::Errorf(Errc::kCorruption, "nexus label at {} fails its checksum", where);
  }
  const uint32_t version = load_le<uint32_t>(in + kOffVersion);
  if (version > kVersion) {
    return Status::Errorf(Errc::kNotSup, "nexus label at {} has version {}; this program reads up to {}", where, version,
                          kVersion);
  }
  ChildLabel l;
  l.block_size = load_le<uint32_t>(in + kOffBlockSize);
  l.sequence = load_le<uint64_t>(in + kOffSequence);
  std::array<uint8_t, 16> u;
  std::memcpy(u.data(), in + kOffNexus, 16);
  l.nexus = Uuid(u);
  std::memcpy(u.data(), in + kOffChild, 16);
  l.child = Uuid(u);
  l.volume_bytes = load_le<uint64_t>(in + kOffVolume);
  l.meta_offset = load_le<uint64_t>(in + kOffMetaOffset);
  l.meta_bytes = load_le<uint64_t>(in + kOffMetaBytes);
  l.generation = load_le<uint64_t>(in + kOffGeneration);
  l.in_sync = load_le<uint32_t>(in + kOffFlags) & 1;
  l.written_ns = load_le<uint64_t>(in + kOffWritten);
  auto want = Layout::For(l.volume_bytes, l.block_size);
  if (!want.ok()) return Status::Errorf(Errc::kCorruption, "nexus label at {}: {}", where, want.status().message());
  if (want->meta_offset != l.meta_offset || want->meta_bytes != l.meta_bytes) {
    return Status::Errorf(Errc::kCorruption, "nexus label at {}: metadata region {}+{} does not match its volume size {}",
                          where, l.meta_offset, l.meta_bytes, l.volume_bytes);
  }
  return l;
}

namespace {
constexpr char kCpMagic[8] = {'T', 'E', 'R', 'N', 'R', 'B', 'C', 'P'};
constexpr size_t kCpVersion = 8, kCpNexus = 16, kCpChild = 32, kCpToken = 48, kCpVolume = 56, kCpDone = 64,
                 kCpWritten = 72, kCpCrc = Layout::kCheckpointSize - 4;
}  // namespace

void RebuildCheckpoint::Encode(uint8_t* out) const {
  std::memset(out, 0, Layout::kCheckpointSize);
  std::memcpy(out, kCpMagic, sizeof(kCpMagic));
  store_le<uint32_t>(out + kCpVersion, kVersion);
  std::memcpy(out + kCpNexus, nexus.bytes().data(), 16);
  std::memcpy(out + kCpChild, child.bytes().data(), 16);
  store_le<uint64_t>(out + kCpToken, token);
  store_le<uint64_t>(out + kCpVolume, volume_bytes);
  store_le<uint64_t>(out + kCpDone, done_bytes);
  store_le<uint64_t>(out + kCpWritten, written_ns);
  store_le<uint32_t>(out + kCpCrc, crc32c(out, kCpCrc));
}

Result<RebuildCheckpoint> RebuildCheckpoint::Decode(const uint8_t* in) {
  if (std::memcmp(in, kCpMagic, sizeof(kCpMagic)) != 0) return Status(Errc::kNoEnt, "no rebuild checkpoint");
  if (load_le<uint32_t>(in + kCpCrc) != crc32c(in, kCpCrc)) {
    return Status(Errc::kCorruption, "the rebuild checkpoint fails its checksum");
  }
  const uint32_t version = load_le<uint32_t>(in + kCpVersion);
  if (version > kVersion) {
    return Status::Errorf(Errc::kNotSup, "rebuild checkpoint version {}; this program reads up to {}", version, kVersion);
  }
  RebuildCheckpoint c;
  std::array<uint8_t, 16> u;
  std::memcpy(u.data(), in + kCpNexus, 16);
  c.nexus = Uuid(u);
  std::memcpy(u.data(), in + kCpChild, 16);
  c.child = Uuid(u);
  c.token = load_le<uint64_t>(in + kCpToken);
  c.volume_bytes = load_le<uint64_t>(in + kCpVolume);
  c.done_bytes = load_le<uint64_t>(in + kCpDone);
  c.written_ns = load_le<uint64_t>(in + kCpWritten);
  if (c.token == 0 || c.done_bytes > c.volume_bytes) {
    return Status::Errorf(Errc::kCorruption, "rebuild checkpoint: token {}, {} of {} bytes done", c.token, c.done_bytes,
                          c.volume_bytes);
  }
  return c;
}

}  // namespace tern::nexus
