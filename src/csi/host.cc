#include "csi/host.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

extern char** environ;

namespace tern::csi {

namespace fs = std::filesystem;

Result<CommandResult> run_command(const std::vector<std::string>& argv, int timeout_s) {
  if (argv.empty()) return Status(Errc::kInval, "no command");
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(pipefd[1]);
  if (rc != 0) {
    ::close(pipefd[0]);
    return Status::Errorf(Errc(rc), "cannot run {}: {}", argv[0], strerror(rc));
  }
  CommandResult out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  bool killed = false;
  char buf[4096];
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      ::kill(pid, SIGKILL);
      killed = true;
      break;
    }
    pollfd p{pipefd[0], POLLIN, 0};
    int n = ::poll(&p, 1, int(std::min<int64_t>(left, 1000)));
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) continue;
    ssize_t got = ::read(pipefd[0], buf, sizeof(buf));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    if (out.output.size() < (1u << 20)) out.output.append(buf, size_t(got));
  }
  ::close(pipefd[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  out.exit_code = killed ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

Status run_ok(const std::vector<std::string>& argv, int timeout_s) {
  auto r = run_command(argv, timeout_s);
  if (!r.ok()) return r.status();
  if (r->exit_code == 0) return Status::Ok();
  std::string cmd;
  for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
  std::string text = r->output;
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  if (text.size() > 2000) text = "..." + text.substr(text.size() - 2000);
  return Status::Errorf(Errc::kIo, "'{}' {}: {}", cmd,
                        r->exit_code < 0 ? fmt::format("did not finish within {} s", timeout_s)
                                         : fmt::format("exited {}", r->exit_code),
                        text.empty() ? "(no output)" : text);
}

namespace {

std::string unescape_octal(const std::string& s) {
  auto odigit = [](char c) { return c >= '0' && c <= '7'; };
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '\\' && i + 3 < s.size() && odigit(s[i + 1]) && odigit(s[i + 2]) && odigit(s[i + 3])) {
      out.push_back(char((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
      continue;
    }
    out.push_back(s[i]);
  }
  return out;
}

std::string read_attr(const fs::path& p) {
  std::ifstream f(p);
  std::string s;
  std::getline(f, s);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

std::vector<MountEntry> parse_mountinfo(const std::string& text) {
  std::vector<MountEntry> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root target options [optional fields...] - fstype source superoptions
    std::istringstream ls(line);
    std::vector<std::string> f;
    for (std::string w; ls >> w;) f.push_back(w);
    auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 10 || dash == f.end() || dash - f.begin() < 6 || f.end() - dash < 3) continue;
    MountEntry m;
    if (std::sscanf(f[2].c_str(), "%u:%u", &m.major, &m.minor) != 2) continue;
    m.root = unescape_octal(f[3]);
    m.target = unescape_octal(f[4]);
    m.options = f[5];
    m.fs_type = *(dash + 1);
    m.source = unescape_octal(*(dash + 2));
    out.push_back(std::move(m));
  }
  return out;
}

std::vector<MountEntry> read_mounts() {
  std::ifstream f("/proc/self/mountinfo");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_mountinfo(ss.str());
}

std::optional<MountEntry> mount_at(const std::vector<MountEntry>& mounts, const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) {
    if (it->target == p) return *it;
  }
  return std::nullopt;
}

Result<NvmfAddress> parse_nvmf_uri(const std::string& uri) {
  const std::string scheme = "nvmf://";
  if (uri.rfind(scheme, 0) != 0) return Status::Errorf(Errc::kInval, "'{}' is not an nvmf:// URI", uri);
  std::string rest = uri.substr(scheme.size());
  size_t slash = rest.find('/');
  if (slash == std::string::npos) return Status::Errorf(Errc::kInval, "'{}' names no subsystem NQN", uri);
  std::string hostport = rest.substr(0, slash);
  NvmfAddress a;
  a.nqn = rest.substr(slash + 1);
  if (size_t q = a.nqn.find('?'); q != std::string::npos) a.nqn.resize(q);
  size_t colon = hostport.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == hostport.size()) {
    return Status::Errorf(Errc::kInval, "'{}' names no host:port", uri);
  }
  a.host = hostport.substr(0, colon);
  a.port = hostport.substr(colon + 1);
  if (a.host.size() > 2 && a.host.front() == '[' && a.host.back() == ']') a.host = a.host.substr(1, a.host.size() - 2);
  if (a.nqn.rfind("nqn.", 0) != 0) return Status::Errorf(Errc::kInval, "'{}': '{}' is not an NQN", uri, a.nqn);
  return a;
}

std::vector<NvmeController> nvme_controllers(const std::string& sys_root) {
  std::vector<NvmeController> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(sys_root) / "class/nvme", ec)) {
    NvmeController c;
    c.name = e.path().filename();
    c.subsysnqn = read_attr(e.path() / "subsysnqn");
    c.transport = read_attr(e.path() / "transport");
    c.address = read_attr(e.path() / "address");
    c.state = read_attr(e.path() / "state");
    out.push_back(std::move(c));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

std::optional<std::string> namespace_by_nguid(const std::string& nguid, const std::string& sys_root) {
  const std::string want = lower(nguid);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(sys_root) / "block", ec)) {
    std::string name = e.path().filename();
    if (name.rfind("nvme", 0) != 0) continue;
    // nvme<subsys>c<ctrl>n<ns>: one path of a multipath namespace, hidden (no device node); the head
    // nvme<subsys>n<ns> is the device.
    size_t digits = name.find_first_not_of("0123456789", 4);
    if (digits != std::string::npos && name[digits] == 'c') continue;
    if (lower(read_attr(e.path() / "nguid")) == want) return name;
    // Some kernels show the identifier only as wwid "eui.<32 hex digits>".
    std::string wwid = lower(read_attr(e.path() / "wwid"));
    std::string hex;
    for (char c : want) {
      if (c != '-') hex.push_back(c);
    }
    if (wwid == "eui." + hex) return name;
  }
  return std::nullopt;
}

std::optional<std::string> subsystem_of(const std::string& block_dev, const std::string& sys_root) {
  fs::path dev = fs::path(sys_root) / "block" / block_dev / "device";
  for (const fs::path& p : {dev / "subsysnqn", dev / "subsystem" / "subsysnqn"}) {
    std::string nqn = read_attr(p);
    if (!nqn.empty()) return nqn;
  }
  return std::nullopt;
}

bool address_matches(const std::string& address, const std::string& host, const std::string& port) {
  bool h = false, p = false;
  size_t at = 0;
  while (at <= address.size()) {
    size_t comma = address.find(',', at);
    if (comma == std::string::npos) comma = address.size();
    std::string kv = address.substr(at, comma - at);
    if (kv == "traddr=" + host) h = true;
    if (kv == "trsvcid=" + port) p = true;
    at = comma + 1;
  }
  return h && p;
}

Result<uint64_t> block_size_bytes(const std::string& dev_path) {
  int fd = ::open(dev_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, dev_path);
  uint64_t bytes = 0;
  int rc = ::ioctl(fd, BLKGETSIZE64, &bytes);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Status::FromErrno(err, dev_path + ": BLKGETSIZE64");
  return bytes;
}

Signature parse_blkid_export(const std::string& text) {
  Signature sig;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("TYPE=", 0) == 0) sig.type = line.substr(5);
    if (line.rfind("PTTYPE=", 0) == 0) sig.pttype = line.substr(7);
  }
  return sig;
}

Result<Signature> probe_signature(const std::string& dev_path) {
  auto r = run_command({"blkid", "-p", "-o", "export", dev_path}, 60);
  if (!r.ok()) return r.status();
  if (r->exit_code == 2) return Signature{};  // nothing found
  if (r->exit_code != 0) return Status::Errorf(Errc::kIo, "blkid {}: exited {}: {}", dev_path, r->exit_code, r->output);
  return parse_blkid_export(r->output);
}

std::optional<NvmeController> read_controller(const std::string& name, const std::string& sys_root) {
  fs::path d = fs::path(sys_root) / "class/nvme" / name;
  std::error_code ec;
  if (!fs::exists(d, ec)) return std::nullopt;
  NvmeController c;
  c.name = name;
  c.subsysnqn = read_attr(d / "subsysnqn");
  c.transport = read_attr(d / "transport");
  c.address = read_attr(d / "address");
  c.state = read_attr(d / "state");
  return c;
}

bool native_multipath(const std::string& sys_root) {
  std::string v = read_attr(fs::path(sys_root) / "module/nvme_core/parameters/multipath");
  return v == "Y" || v == "1";
}

Result<std::string> read_host_nqn(const std::string& path) {
  std::string nqn = read_attr(path);
  if (nqn.rfind("nqn.", 0) != 0) {
    return Status::Errorf(Errc::kNoEnt, "{} holds no host NQN (nvme-cli's; write one with 'nvme gen-hostnqn > {}')", path, path);
  }
  return nqn;
}

}  // namespace tern::csi
