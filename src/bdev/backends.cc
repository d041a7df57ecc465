#include "bdev/backends.h"

namespace tern {

void register_builtin_backends(BdevRegistry& r) {
  r.register_scheme("uring", make_uring_bdev);
  r.register_scheme("aio", make_uring_bdev);
  r.register_scheme("malloc", make_malloc_bdev);
  r.register_scheme("null", make_null_bdev);
  r.register_scheme("error", make_error_bdev);
  r.register_scheme("delay", make_delay_bdev);
  r.register_scheme("powercut", make_powercut_bdev);
}

Result<std::string> name_from_path(const Uri& uri) {
  if (!uri.host.empty()) {
    return Status::Errorf(Errc::kInval, "invalid URI '{}': scheme '{}' takes no host (write '{}:///{}')", uri.text,
                          uri.scheme, uri.scheme, uri.host + uri.path);
  }
  if (uri.path.size() < 2 || uri.path[0] != '/') {
    return Status::Errorf(Errc::kInval, "invalid URI '{}': missing device name (expected '{}:///<name>')", uri.text,
                          uri.scheme);
  }
  std::string name = uri.path.substr(1);
  if (name.find('/') != std::string::npos) {
    return Status::Errorf(Errc::kInval, "invalid URI '{}': device name '{}' must not contain '/'", uri.text, name);
  }
  return name;
}

Result<Uuid> uuid_param(const Uri& uri, const UriQuery& q) {
  auto u = q.str("uuid");
  if (!u) return Uuid::Generate();
  auto parsed = Uuid::Parse(*u);
  if (!parsed.ok()) return parsed.status().WithContext(fmt::format("invalid URI '{}'", uri.text));
  return *parsed;
}

Result<BdevProps> ram_device_props(const Uri& uri, const BdevRegistry& reg, std::string product,
                                   bool allow_populate) {
  auto made = allow_populate ? UriQuery::Make(uri, {"size_mb", "num_blocks", "blk_size", "uuid", "populate"})
                             : UriQuery::Make(uri, {"size_mb", "num_blocks", "blk_size", "uuid"});
  TERN_ASSIGN_OR_RETURN(UriQuery q, std::move(made));
  BdevProps p;
  TERN_ASSIGN_OR_RETURN(p.name, name_from_path(uri));
  TERN_RETURN_IF_ERROR(reg.check_new_name(p.name));
  p.product = std::move(product);
  p.unmap_reads_zeroes = true;
  TERN_ASSIGN_OR_RETURN(auto bs, q.u64("blk_size"));
  if (bs) {
    if (*bs != 512 && *bs != 4096) {
      return Status::Errorf(Errc::kInval, "invalid URI '{}': blk_size must be 512 or 4096, got {}", uri.text, *bs);
    }
    p.block_size = uint32_t(*bs);
  }
  TERN_ASSIGN_OR_RETURN(auto mb, q.u64("size_mb"));
  TERN_ASSIGN_OR_RETURN(auto nb, q.u64("num_blocks"));
  if (mb && nb) {
    return Status::Errorf(Errc::kInval, "invalid URI '{}': give either size_mb or num_blocks, not both", uri.text);
  }
  if (!mb && !nb) {
    return Status::Errorf(Errc::kInval, "invalid URI '{}': a size is required (size_mb=<MiB> or num_blocks=<n>)",
                          uri.text);
  }
  if (mb) {
    if (*mb == 0) return Status::Errorf(Errc::kInval, "invalid URI '{}': size_mb must be greater than zero", uri.text);
    if (*mb > (uint64_t(1) << 40)) return Status::Errorf(Errc::kInval, "invalid URI '{}': size_mb {} is too large", uri.text, *mb);
    p.num_blocks = *mb * 1024 * 1024 / p.block_size;
  } else {
    if (*nb == 0) return Status::Errorf(Errc::kInval, "invalid URI '{}': num_blocks must be greater than zero", uri.text);
    if (*nb > (uint64_t(1) << 50) / p.block_size) return Status::Errorf(Errc::kInval, "invalid URI '{}': num_blocks {} is too large", uri.text, *nb);
    p.num_blocks = *nb;
  }
  TERN_ASSIGN_OR_RETURN(p.uuid, uuid_param(uri, q));
  return p;
}

}  // namespace tern
