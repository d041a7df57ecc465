#include "engine/test_hooks.h"

#include <algorithm>

#include "common/aligned_buffer.h"
#include "common/log.h"
#include "common/crc32c.h"
#include "common/verify_pattern.h"
#include "pool/device_io.h"

namespace tern::engine {

namespace {

constexpr uint64_t kPatternChunk = 1 << 20;
constexpr uint64_t kPatternMax = 1ull << 30;

Status check_pattern_range(const Bdev& b, const PatternArgs& a) {
  uint64_t bs = b.props().block_size;
  uint64_t size = b.num_blocks() * bs;
  if (a.length == 0 || a.length > kPatternMax) return Status(Errc::kInval, "length: 1 byte .. 1 GiB");
  if (a.offset % 512 || a.length % 512 || a.offset % bs || a.length % bs) {
    return Status::Errorf(Errc::kInval, "offset and length: multiples of the block size ({})", bs);
  }
  if (a.offset + a.length > size) {
    return Status::Errorf(Errc::kInval, "offset + length: past the end of '{}' ({} bytes)", b.name(), size);
  }
  return Status::Ok();
}

}  // namespace

Status TestHooks::set_error_rules(const std::string& device, const std::vector<std::string>& rules) {
  auto* e = dynamic_cast<ErrorBdev*>(registry_.find(device));
  if (!e) return Status::Errorf(Errc::kNoEnt, "device: no error:// device '{}'", device);
  std::vector<ErrorRule> parsed;
  for (auto& r : rules) {
    auto p = ErrorRule::Parse(r);
    if (!p.ok()) return Status::Errorf(Errc::kInval, "rules: {}", p.status().message());
    parsed.push_back(*p);
  }
  e->set_rules(parsed);
  TLOG_INFO("engine", "error rules of '{}': {} rule(s)", device, parsed.size());
  return Status::Ok();
}

Status TestHooks::set_delay(const std::string& device, const DelayConfig& delays) {
  auto* d = dynamic_cast<DelayBdev*>(registry_.find(device));
  if (!d) return Status::Errorf(Errc::kNoEnt, "device: no delay:// device '{}'", device);
  d->set_config(delays);
  return Status::Ok();
}

Task<Status> TestHooks::write_pattern(PatternArgs a) {
  auto desc = registry_.open(a.device, /*writable=*/true);
  if (!desc.ok()) co_return Status::Errorf(desc.code(), "device: {}", desc.status().message());
  TERN_CO_RETURN_IF_ERROR(check_pattern_range((*desc)->bdev(), a));
  AlignedBuffer buf(kPatternChunk);
  for (uint64_t off = a.offset; off < a.offset + a.length; off += kPatternChunk) {
    uint64_t len = std::min(kPatternChunk, a.offset + a.length - off);
    ioperf::fill_pattern(buf.data(), len, off, a.generation);
    Errc e = co_await pool::device_io(**desc, IoType::kWrite, off, buf.data(), len);
    if (e != Errc::kOk) co_return Status::Errorf(e, "writing at byte {}: {}", off, errc_describe(e));
  }
  Errc e = co_await pool::device_flush(**desc);
  if (e != Errc::kOk) co_return Status::Errorf(e, "flush: {}", errc_describe(e));
  co_return Status::Ok();
}

Task<Result<PatternCheck>> TestHooks::verify_pattern(PatternArgs a) {
  auto desc = registry_.open(a.device, /*writable=*/false);
  if (!desc.ok()) co_return Status::Errorf(desc.code(), "device: {}", desc.status().message());
  TERN_CO_RETURN_IF_ERROR(check_pattern_range((*desc)->bdev(), a));
  AlignedBuffer buf(kPatternChunk), scratch(kPatternChunk);
  PatternCheck check;
  for (uint64_t off = a.offset; off < a.offset + a.length; off += kPatternChunk) {
    uint64_t len = std::min(kPatternChunk, a.offset + a.length - off);
    Errc e = co_await pool::device_io(**desc, IoType::kRead, off, buf.data(), len);
    if (e != Errc::kOk) co_return Status::Errorf(e, "reading at byte {}: {}", off, errc_describe(e));
    ioperf::Mismatch mm;
    if (!ioperf::check_pattern(buf.data(), len, off, a.generation, scratch.data(), &mm)) {
      check.ok = false;
      check.mismatch = mm.describe((*desc)->bdev().props().block_size);
      check.bytes_checked = off - a.offset;
      co_return check;
    }
  }
  check.bytes_checked = a.length;
  co_return check;
}

Task<Result<std::vector<uint32_t>>> TestHooks::checksum(PatternArgs a) {
  auto desc = registry_.open(a.device, /*writable=*/false);
  if (!desc.ok()) co_return Status::Errorf(desc.code(), "device: {}", desc.status().message());
  TERN_CO_RETURN_IF_ERROR(check_pattern_range((*desc)->bdev(), a));
  AlignedBuffer buf(kPatternChunk);
  std::vector<uint32_t> out;
  for (uint64_t off = a.offset; off < a.offset + a.length; off += kPatternChunk) {
    uint64_t len = std::min(kPatternChunk, a.offset + a.length - off);
    Errc e = co_await pool::device_io(**desc, IoType::kRead, off, buf.data(), len);
    if (e != Errc::kOk) co_return Status::Errorf(e, "reading at byte {}: {}", off, errc_describe(e));
    out.push_back(crc32c(buf.data(), len));
  }
  co_return out;
}

}  // namespace tern::engine
