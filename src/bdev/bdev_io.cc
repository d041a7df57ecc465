#include "bdev/bdev_io.h"

namespace tern {

std::string_view io_type_name(IoType t) {
  switch (t) {
    case IoType::kRead: return "read";
    case IoType::kWrite: return "write";
    case IoType::kFlush: return "flush";
    case IoType::kUnmap: return "unmap";
    case IoType::kWriteZeroes: return "write_zeroes";
    case IoType::kReset: return "reset";
  }
  return "?";
}

uint64_t BdevIo::bytes() const {
  uint64_t n = 0;
  for (int i = 0; i < iovcnt; ++i) n += iovs[i].iov_len;
  return n;
}

}  // namespace tern
