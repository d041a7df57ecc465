// Built-in device backends and their factories. Each backend lives in its own file:
//   uring_bdev.cc (uring://, aio://), malloc_bdev.cc (malloc://), null_bdev.cc (null://),
//   error_bdev.cc (error://, fault injection), delay_bdev.cc (delay://, latency injection).
#pragma once

#include "bdev/registry.h"

namespace tern {

void register_builtin_backends(BdevRegistry& registry);

Task<Result<std::unique_ptr<Bdev>>> make_uring_bdev(const Uri& uri, BdevRegistry& registry);
Task<Result<std::unique_ptr<Bdev>>> make_malloc_bdev(const Uri& uri, BdevRegistry& registry);
Task<Result<std::unique_ptr<Bdev>>> make_null_bdev(const Uri& uri, BdevRegistry& registry);
Task<Result<std::unique_ptr<Bdev>>> make_error_bdev(const Uri& uri, BdevRegistry& registry);
Task<Result<std::unique_ptr<Bdev>>> make_delay_bdev(const Uri& uri, BdevRegistry& registry);
Task<Result<std::unique_ptr<Bdev>>> make_powercut_bdev(const Uri& uri, BdevRegistry& registry);

// Shared by the backends: the device name is the URI path without its leading '/', one segment.
Result<std::string> name_from_path(const Uri& uri);
// The `uuid` parameter, or a new random UUID when it is absent.
Result<Uuid> uuid_param(const Uri& uri, const UriQuery& q);
// Properties of a RAM-like device (malloc://, null://) from its URI: name, size_mb | num_blocks,
// blk_size, uuid; the name must be free.
// `populate` says whether the URI may carry populate=0|1 (malloc only); its value is read by the caller.
Result<BdevProps> ram_device_props(const Uri& uri, const BdevRegistry& reg, std::string product,
                                   bool allow_populate = false);

}  // namespace tern
