// Base64 (RFC 4648, standard alphabet, with padding): how etcd's JSON gateway carries keys and values,
// which are arbitrary bytes.
//
// Pure functions; any thread.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace tern::store {

std::string base64_encode(std::string_view bytes);
// Strict: the standard alphabet, a length that is a multiple of 4, padding only at the end. kInval
// naming the offending position otherwise.
Result<std::string> base64_decode(std::string_view text);

}  // namespace tern::store
