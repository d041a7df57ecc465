#include "engine/state_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace tern::engine {

namespace {

Status sys_error(const std::string& what, const std::string& path) {
  int e = errno;
  return Status::Errorf(Errc(e), "{} '{}': {}", what, path, std::strerror(e));
}

Status write_all(int fd, const std::string& data, const std::string& path) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("cannot write", path);
    }
    off += size_t(n);
  }
  return Status::Ok();
}

}  // namespace

std::string StateFile::path() const { return dir_.empty() ? std::string() : dir_ + "/engine-state.json"; }

Result<std::vector<PoolSpec>> StateFile::load() const {
  std::vector<PoolSpec> out;
  if (dir_.empty()) return out;
  std::ifstream in(path());
  if (!in) {
    if (errno == ENOENT) return out;
    return sys_error("cannot read the engine state file", path());
  }
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("pools") || !j["pools"].is_array()) {
    return Status::Errorf(Errc::kCorruption,
                          "the engine state file '{}' is damaged (expected {{\"pools\": [...]}}); fix or remove it "
                          "(pools can be imported again with 'ternctl pool import')",
                          path());
  }
  for (auto& p : j["pools"]) {
    if (!p.is_object() || !p.contains("name") || !p.contains("disk") || !p["name"].is_string() ||
        !p["disk"].is_string()) {
      return Status::Errorf(Errc::kCorruption, "the engine state file '{}' has a bad pool entry: {}", path(),
                            p.dump());
    }
    out.push_back({p["name"].get<std::string>(), p["disk"].get<std::string>()});
  }
  return out;
}

Status StateFile::save(const std::vector<PoolSpec>& pools) const {
  if (dir_.empty()) return Status::Ok();
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return Status::Errorf(Errc::kIo, "cannot create the state directory '{}': {}", dir_, ec.message());
  nlohmann::json j = {{"version", 1}, {"pools", nlohmann::json::array()}};
  for (auto& p : pools) j["pools"].push_back({{"name", p.name}, {"disk", p.disk}});
  std::string data = j.dump(2) + "\n";
  std::string tmp = path() + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return sys_error("cannot create", tmp);
  Status s = write_all(fd, data, tmp);
  if (s.ok() && ::fsync(fd) != 0) s = sys_error("cannot sync", tmp);
  ::close(fd);
  if (s.ok() && ::rename(tmp.c_str(), path().c_str()) != 0) s = sys_error("cannot replace", path());
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return Status::Ok();
}

}  // namespace tern::engine
