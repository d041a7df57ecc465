// Parsing of human quantities on command lines and in configs: sizes ("4k", "128KiB", "1g", "512")
// in powers of 1024, and durations ("10s", "500ms", "2m", "250us"; a bare number is seconds).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace tern {

Result<uint64_t> parse_size(std::string_view s);
Result<uint64_t> parse_duration_ns(std::string_view s);
// "4 KiB", "1.5 GiB".
std::string format_size(uint64_t bytes);

}  // namespace tern
