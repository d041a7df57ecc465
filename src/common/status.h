// Status: the outcome of an operation, as a value.
//
// A Status is an error code (errno values, plus a few project codes) and an optional message.
// OK and message-less errors cost no allocation, so the I/O path can return them freely; a message
// is added at control edges where a human will read it. Nothing on the data path throws.
#pragma once

#include <cerrno>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>

namespace tern {

// Error codes. The errno-valued ones convert directly from syscall and io_uring results
// (`Errc(-res)`); project codes sit above the errno range.
enum class Errc : int32_t {
  kOk = 0,
  kPerm = EPERM,
  kNoEnt = ENOENT,
  kIo = EIO,
  kNoDevOrAddr = ENXIO,
  kBadF = EBADF,
  kAgain = EAGAIN,
  kNoMem = ENOMEM,
  kAccess = EACCES,
  kFault = EFAULT,
  kBusy = EBUSY,
  kExist = EEXIST,
  kNoDev = ENODEV,
  kInval = EINVAL,
  kFBig = EFBIG,
  kNoSpc = ENOSPC,
  kRange = ERANGE,
  kNotSup = EOPNOTSUPP,
  kConnRefused = ECONNREFUSED,
  kConnReset = ECONNRESET,
  kShutdown = ESHUTDOWN,
  kTimedOut = ETIMEDOUT,
  kCanceled = ECANCELED,
  kProto = EPROTO,
  kStale = ESTALE,  // a compare-and-set found another writer's value: this writer was superseded
  // Project codes.
  kMediaError = 4096 + 1,  // the device reported an unrecoverable media error for this range
  kCorruption = 4096 + 2,  // on-disk data failed validation (checksum, magic, bounds)
};

// Short symbolic name ("EIO", "MEDIA_ERROR") for any code, including unnamed errno values.
std::string_view errc_name(Errc c);
// Human description ("Input/output error").
std::string errc_describe(Errc c);

class [[nodiscard]] Status {
 public:
  Status() noexcept = default;
  explicit Status(Errc code) noexcept : code_(code) {}
  Status(Errc code, std::string message);

  Status(const Status& o) : code_(o.code_), msg_(o.msg_ ? std::make_unique<std::string>(*o.msg_) : nullptr) {}
  Status& operator=(const Status& o) {
    if (this != &o) {
      code_ = o.code_;
      msg_ = o.msg_ ? std::make_unique<std::string>(*o.msg_) : nullptr;
    }
    return *this;
  }
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;

  static Status Ok() noexcept { return Status(); }
  // Status from a positive errno value (or a negative syscall/io_uring result).
  static Status FromErrno(int err, std::string message = {});
  template <typename... Args>
  static Status Errorf(Errc code, fmt::format_string<Args...> f, Args&&... args) {
    return Status(code, fmt::format(f, std::forward<Args>(args)...));
  }

  bool ok() const noexcept { return code_ == Errc::kOk; }
  explicit operator bool() const noexcept { return ok(); }
  Errc code() const noexcept { return code_; }
  std::string_view message() const noexcept { return msg_ ? std::string_view(*msg_) : std::string_view(); }

  // "EIO: message" (or "EIO: Input/output error" when there is no message); "OK" when ok.
  std::string ToString() const;
  // Returns a copy whose message is "<context>: <old message>", keeping the code.
  Status WithContext(std::string_view context) const;

  friend bool operator==(const Status& a, Errc c) noexcept { return a.code_ == c; }

 private:
  Errc code_ = Errc::kOk;
  std::unique_ptr<std::string> msg_;
};

std::ostream& operator<<(std::ostream& os, const Status& s);
std::ostream& operator<<(std::ostream& os, Errc c);

}  // namespace tern

template <>
struct fmt::formatter<tern::Status> : fmt::formatter<std::string> {
  template <typename Ctx>
  auto format(const tern::Status& s, Ctx& ctx) const {
    return fmt::formatter<std::string>::format(s.ToString(), ctx);
  }
};
template <>
struct fmt::formatter<tern::Errc> : fmt::formatter<std::string_view> {
  template <typename Ctx>
  auto format(tern::Errc c, Ctx& ctx) const {
    return fmt::formatter<std::string_view>::format(tern::errc_name(c), ctx);
  }
};
