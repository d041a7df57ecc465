#include "pool/superblock.h"

#include <algorithm>
#include <cstring>

#include "common/crc32c.h"
#include "common/endian.h"

namespace tern::pool {
namespace {

constexpr char kMagic[8] = {'T', 'E', 'R', 'N', 'P', 'O', 'O', 'L'};
constexpr size_t kCrcOffset = Superblock::kSize - 4;
constexpr size_t kDeviceTable = 256;
constexpr size_t kDeviceEntrySize = 32;
constexpr uint64_t kBlock = 4096;
constexpr uint64_t kMaxReplicaEntries = 16384;
constexpr uint64_t kReplicaEntrySize = 256;
constexpr uint64_t kPerClusterState = 8 + 128;  // map entry + written-granule bitmap (4 KiB granules)
constexpr uint64_t kGrowthFactor = 4;           // checkpoints have room for a pool grown to 4x

bool is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

Status validate_name(std::string_view name) { return validate_object_name("pool", name, Superblock::kMaxName); }

Status validate_cluster_size(uint64_t c) {
  if (!is_pow2(c) || c < Superblock::kMinClusterSize || c > Superblock::kMaxClusterSize) {
    return Status::Errorf(Errc::kInval, "cluster size {} is not a power of two from 1 MiB to 1 GiB", c);
  }
  return Status::Ok();
}

}  // namespace

void Superblock::Encode(uint8_t* out) const {
  std::memset(out, 0, kSize);
  std::memcpy(out, kMagic, 8);
  store_le<uint32_t>(out + 8, kVersion);
  store_le<uint32_t>(out + 12, uint32_t(devices.size()));
  std::memcpy(out + 16, pool_uuid.bytes().data(), 16);
  std::memcpy(out + 32, name.data(), std::min(name.size(), kMaxName));
  store_le<uint64_t>(out + 96, generation);
  store_le<uint32_t>(out + 104, clean ? 1u : 0u);
  store_le<uint64_t>(out + 112, cluster_size);
  store_le<uint64_t>(out + 120, pool_size);
  store_le<uint64_t>(out + 128, checkpoint_a);
  store_le<uint64_t>(out + 136, checkpoint_b);
  store_le<uint64_t>(out + 144, checkpoint_size);
  store_le<uint64_t>(out + 152, log_offset);
  store_le<uint64_t>(out + 160, log_size);
  store_le<uint64_t>(out + 168, data_offset);
  store_le<uint64_t>(out + 176, data_clusters);
  store_le<uint64_t>(out + 184, created_ns);
  for (size_t i = 0; i < devices.size() && i < kMaxDevices; ++i) {
    uint8_t* e = out + kDeviceTable + i * kDeviceEntrySize;
    std::memcpy(e, devices[i].uuid.bytes().data(), 16);
    store_le<uint64_t>(e + 16, devices[i].size_bytes);
  }
  store_le<uint32_t>(out + kCrcOffset, crc32c(out, kCrcOffset));
}

Result<Superblock> Superblock::Decode(const uint8_t* in, std::string_view where) {
  if (std::memcmp(in, kMagic, 8) != 0) return Status::Errorf(Errc::kNoEnt, "{}: no pool label", where);
  const uint32_t want = load_le<uint32_t>(in + kCrcOffset), got = crc32c(in, kCrcOffset);
  if (want != got) {
    return Status::Errorf(Errc::kCorruption, "{}: checksum mismatch (stored {:08x}, computed {:08x})", where, want, got);
  }
  const uint32_t version = load_le<uint32_t>(in + 8);
  if (version > kVersion) {
    return Status::Errorf(Errc::kNotSup, "{}: format version {} is newer than this build supports ({})", where,
                          version, kVersion);
  }
  if (version == 0) return Status::Errorf(Errc::kCorruption, "{}: format version 0 is invalid", where);
  Superblock sb;
  const uint32_t ndev = load_le<uint32_t>(in + 12);
  std::array<uint8_t, 16> u;
  std::memcpy(u.data(), in + 16, 16);
  sb.pool_uuid = Uuid(u);
  const char* n = reinterpret_cast<const char*>(in + 32);
  sb.name.assign(n, strnlen(n, kMaxName + 1));
  sb.generation = load_le<uint64_t>(in + 96);
  sb.clean = load_le<uint32_t>(in + 104) & 1;
  sb.cluster_size = load_le<uint64_t>(in + 112);
  sb.pool_size = load_le<uint64_t>(in + 120);
  sb.checkpoint_a = load_le<uint64_t>(in + 128);
  sb.checkpoint_b = load_le<uint64_t>(in + 136);
  sb.checkpoint_size = load_le<uint64_t>(in + 144);
  sb.log_offset = load_le<uint64_t>(in + 152);
  sb.log_size = load_le<uint64_t>(in + 160);
  sb.data_offset = load_le<uint64_t>(in + 168);
  sb.data_clusters = load_le<uint64_t>(in + 176);
  sb.created_ns = load_le<uint64_t>(in + 184);
  if (ndev == 0 || ndev > kMaxDevices) {
    return Status::Errorf(Errc::kCorruption, "{}: device count {} is outside 1..{}", where, ndev, kMaxDevices);
  }
  for (uint32_t i = 0; i < ndev; ++i) {
    const uint8_t* e = in + kDeviceTable + i * kDeviceEntrySize;
    DeviceEntry d;
    std::memcpy(u.data(), e, 16);
    d.uuid = Uuid(u);
    d.size_bytes = load_le<uint64_t>(e + 16);
    sb.devices.push_back(d);
  }
  Status v = sb.Validate();
  if (!v.ok()) return Status::Errorf(Errc::kCorruption, "{}: {}", where, v.message());
  return sb;
}

Status Superblock::Validate() const {
  TERN_RETURN_IF_ERROR(validate_name(name));
  TERN_RETURN_IF_ERROR(validate_cluster_size(cluster_size));
  if (pool_uuid.is_nil()) return Status::Errorf(Errc::kInval, "pool UUID is nil");
  if (pool_size % kBlock || pool_size < 2 * kBlock) {
    return Status::Errorf(Errc::kInval, "pool size {} is not a multiple of 4096 of at least 8 KiB", pool_size);
  }
  struct Area {
    const char* what;
    uint64_t off, len;
  } areas[] = {{"checkpoint A", checkpoint_a, checkpoint_size},
               {"checkpoint B", checkpoint_b, checkpoint_size},
               {"metadata log", log_offset, log_size},
               {"data area", data_offset, data_clusters * cluster_size}};
  uint64_t end = kSize;  // after the primary superblock
  for (auto& a : areas) {
    if (a.off % kBlock || a.len % kBlock || a.len == 0) {
      return Status::Errorf(Errc::kInval, "{} (offset {}, {} bytes) is empty or not 4 KiB-aligned", a.what, a.off,
                            a.len);
    }
    if (a.off < end) {
      return Status::Errorf(Errc::kInval, "{} at offset {} overlaps what precedes it (which ends at {})", a.what,
                            a.off, end);
    }
    if (a.len > pool_size || a.off > pool_size - kSize - a.len) {
      return Status::Errorf(Errc::kInval, "{} (offset {}, {} bytes) runs past the backup superblock at {}", a.what,
                            a.off, a.len, pool_size - kSize);
    }
    end = a.off + a.len;
  }
  if (data_clusters > (pool_size / cluster_size)) {
    return Status::Errorf(Errc::kInval, "{} data clusters do not fit in {} bytes", data_clusters, pool_size);
  }
  if (devices.empty() || devices.size() > kMaxDevices) {
    return Status::Errorf(Errc::kInval, "device count {} is outside 1..{}", devices.size(), kMaxDevices);
  }
  if (devices.size() != 1) {
    return Status::Errorf(Errc::kNotSup, "pools on {} devices are not supported yet", devices.size());
  }
  if (devices[0].size_bytes != pool_size) {
    return Status::Errorf(Errc::kInval, "device size {} differs from the pool size {}", devices[0].size_bytes,
                          pool_size);
  }
  return Status::Ok();
}

Status validate_object_name(std::string_view kind, std::string_view name, size_t max_len) {
  if (name.empty()) return Status::Errorf(Errc::kInval, "{} name is empty", kind);
  if (name.size() > max_len) {
    return Status::Errorf(Errc::kInval, "{} name '{}' is longer than {} characters", kind, name, max_len);
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.' || c == ':';
    if (!ok) {
      return Status::Errorf(Errc::kInval, "{} name '{}' contains '{}'; use letters, digits, '-', '_', '.' and ':'", kind,
                            name, c);
    }
  }
  return Status::Ok();
}

namespace {
uint64_t checkpoint_size_for(uint64_t clusters) {
  const uint64_t growth = std::max<uint64_t>(clusters, 1) * kGrowthFactor;
  const uint64_t replicas = std::clamp<uint64_t>(clusters, 1024, kMaxReplicaEntries);
  return align_up<uint64_t>(64 * 1024 + growth * kPerClusterState + replicas * kReplicaEntrySize, 64 * 1024);
}
}  // namespace

uint64_t max_data_clusters(const Superblock& sb) {
  // The largest pool the checkpoint areas were sized for: kGrowthFactor x the clusters of the device
  // they were laid out for (found back from the area size).
  uint64_t lo = 1, hi = uint64_t(1) << 40;
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo + 1) / 2;
    if (checkpoint_size_for(mid) <= sb.checkpoint_size) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo * kGrowthFactor;
}

Result<Superblock> make_layout(std::string name, Uuid uuid, uint64_t device_size, uint64_t cluster_size) {
  TERN_RETURN_IF_ERROR(validate_name(name));
  TERN_RETURN_IF_ERROR(validate_cluster_size(cluster_size));
  Superblock sb;
  sb.name = std::move(name);
  sb.pool_uuid = uuid;
  sb.cluster_size = cluster_size;
  sb.pool_size = device_size / kBlock * kBlock;
  const uint64_t clusters = sb.pool_size / cluster_size;
  constexpr uint64_t kAreaAlign = 64 * 1024;
  sb.checkpoint_size = checkpoint_size_for(clusters);
  sb.log_size = align_up<uint64_t>(std::clamp<uint64_t>(sb.pool_size / 4000, Superblock::kAlign, uint64_t(1) << 30), kAreaAlign);
  sb.checkpoint_a = Superblock::kAlign;
  sb.checkpoint_b = sb.checkpoint_a + sb.checkpoint_size;
  sb.log_offset = sb.checkpoint_b + sb.checkpoint_size;
  sb.data_offset = align_up<uint64_t>(sb.log_offset + sb.log_size, Superblock::kAlign);
  const uint64_t need = sb.data_offset + cluster_size + Superblock::kSize;
  if (sb.pool_size < need) {
    return Status::Errorf(Errc::kNoSpc,
                          "device of {} bytes is too small for a pool with {} MiB clusters: at least {} bytes are "
                          "needed (metadata {} bytes, one cluster, the backup label)",
                          device_size, cluster_size >> 20, need, sb.data_offset);
  }
  sb.data_clusters = (sb.pool_size - Superblock::kSize - sb.data_offset) / cluster_size;
  sb.devices.push_back({Uuid::Generate(), sb.pool_size});
  TERN_RETURN_IF_ERROR(sb.Validate());
  return sb;
}

Result<SuperblockChoice> choose_superblock(const Result<Superblock>& primary, const Result<Superblock>& backup) {
  SuperblockChoice c;
  if (primary.ok() && backup.ok()) {
    const Superblock &p = *primary, &b = *backup;
    if (p.pool_uuid != b.pool_uuid) {
      return Status::Errorf(Errc::kCorruption,
                            "the superblocks belong to different pools (primary: '{}' {}, backup: '{}' {}); refusing "
                            "to guess",
                            p.name, p.pool_uuid.ToString(), b.name, b.pool_uuid.ToString());
    }
    uint8_t ep[Superblock::kSize], eb[Superblock::kSize];
    p.Encode(ep);
    b.Encode(eb);
    if (std::memcmp(ep, eb, sizeof(ep)) == 0) {
      c.sb = p;
      return c;
    }
    if (b.generation > p.generation) {
      c.sb = b;
      c.repair_primary = true;
      c.note = fmt::format("primary superblock is stale (generation {} < {}); rewriting it from the backup",
                           p.generation, b.generation);
    } else {
      c.sb = p;
      c.repair_backup = true;
      c.note = fmt::format("backup superblock differs (generation {} vs {}); rewriting it from the primary",
                           b.generation, p.generation);
    }
    return c;
  }
  if (primary.ok()) {
    c.sb = *primary;
    c.repair_backup = true;
    c.note = fmt::format("{}; rewriting it from the primary", backup.status().message());
    return c;
  }
  if (backup.ok()) {
    c.sb = *backup;
    c.repair_primary = true;
    c.note = fmt::format("{}; rewriting it from the backup", primary.status().message());
    return c;
  }
  if (primary.code() == Errc::kNoEnt && backup.code() == Errc::kNoEnt) {
    return Status::Errorf(Errc::kNoEnt, "no pool on this device (no label at the start or the end)");
  }
  if (primary.code() == Errc::kNotSup || backup.code() == Errc::kNotSup) {
    return primary.code() == Errc::kNotSup ? primary.status() : backup.status();
  }
  return Status::Errorf(Errc::kCorruption, "both superblocks are unusable: {}; {}", primary.status().message(),
                        backup.status().message());
}

}  // namespace tern::pool
