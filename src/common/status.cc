#include "common/status.h"

#include <cstring>
#include <ostream>

namespace tern {

std::string_view errc_name(Errc c) {
  switch (c) {
    case Errc::kOk: return "OK";
    case Errc::kMediaError: return "MEDIA_ERROR";
    case Errc::kCorruption: return "CORRUPTION";
    default: break;
  }
  const char* n = strerrorname_np(static_cast<int>(c));
  return n ? std::string_view(n) : std::string_view("UNKNOWN_ERROR");
}

std::string errc_describe(Errc c) {
  switch (c) {
    case Errc::kOk: return "success";
    case Errc::kMediaError: return "unrecovered media error";
    case Errc::kCorruption: return "data failed validation (corruption)";
    default: break;
  }
  const char* d = strerrordesc_np(static_cast<int>(c));
  return d ? std::string(d) : fmt::format("error {}", static_cast<int>(c));
}

Status::Status(Errc code, std::string message) : code_(code) {
  if (!message.empty()) msg_ = std::make_unique<std::string>(std::move(message));
}

Status Status::FromErrno(int err, std::string message) {
  if (err < 0) err = -err;
  return Status(static_cast<Errc>(err), std::move(message));
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  if (!msg_) return fmt::format("{}: {}", errc_name(code_), errc_describe(code_));
  return fmt::format("{}: {}", errc_name(code_), *msg_);
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  if (!msg_) return Status(code_, fmt::format("{}: {}", context, errc_describe(code_)));
  return Status(code_, fmt::format("{}: {}", context, *msg_));
}

std::ostream& operator<<(std::ostream& os, const Status& s) { return os << s.ToString(); }
std::ostream& operator<<(std::ostream& os, Errc c) { return os << errc_name(c); }

}  // namespace tern
