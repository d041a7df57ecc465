// CRC32C (Castagnoli), as used by NVMe/TCP digests, iSCSI and our on-disk metadata.
//
// crc32c(data) is the standard value (check value of "123456789" is 0xE3069283). Chaining works:
// crc32c(b, crc32c(a)) == crc32c(a ++ b). The fast path is isa-l (SSE4.2/PCLMUL/AVX512 picked at run
// time); a table-driven software path exists for tests and as a fallback.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tern {

uint32_t crc32c(const void* data, size_t len, uint32_t prev = 0);
uint32_t crc32c_software(const void* data, size_t len, uint32_t prev = 0);

// Which implementation crc32c() uses ("isa-l" or "software").
const char* crc32c_impl();

}  // namespace tern
