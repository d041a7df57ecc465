#include "config.h"

#include <charconv>

#include <yaml-cpp/yaml.h>

namespace tern::tgt {

Result<nvmf::ListenAddr> parse_listen_addr(const std::string& s) {
  size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return Status::Errorf(Errc::kInval, "listener '{}' must be host:port (e.g. 127.0.0.1:4420 or [::1]:4420)", s);
  }
  std::string host = s.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned port = 0;
  std::string ps = s.substr(colon + 1);
  auto [p, ec] = std::from_chars(ps.data(), ps.data() + ps.size(), port);
  if (ps.empty() || ec != std::errc() || p != ps.data() + ps.size() || port > 65535) {
    return Status::Errorf(Errc::kInval, "listener '{}': '{}' is not a port number", s, ps);
  }
  return nvmf::ListenAddr{host, uint16_t(port)};
}

namespace {

template <typename T>
Result<T> get(const YAML::Node& n, const char* key, T fallback, const std::string& where) {
  if (!n[key]) return fallback;
  try {
    return n[key].as<T>();
  } catch (const YAML::Exception&) {
    return Status::Errorf(Errc::kInval, "{}: '{}' has the wrong type", where, key);
  }
}

Status check_keys(const YAML::Node& n, std::initializer_list<const char*> known, const std::string& where) {
  if (!n.IsMap()) return Status::Errorf(Errc::kInval, "{} must be a mapping", where);
  for (auto it = n.begin(); it != n.end(); ++it) {
    std::string k = it->first.as<std::string>();
    bool ok = false;
    for (const char* x : known) ok |= k == x;
    if (!ok) {
      std::string list;
      for (const char* x : known) list += (list.empty() ? "" : ", ") + std::string(x);
      return Status::Errorf(Errc::kInval, "{}: unknown key '{}' (known: {})", where, k, list);
    }
  }
  return Status::Ok();
}

}  // namespace

Result<TargetConfig> load_config(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return Status::Errorf(Errc::kNoEnt, "cannot read config file '{}'", path);
  } catch (const YAML::Exception& e) {
    return Status::Errorf(Errc::kInval, "config file '{}': {}", path, e.what());
  }
  TargetConfig c;
  TERN_RETURN_IF_ERROR(
      check_keys(root, {"cores", "log_level", "devices", "listeners", "subsystems", "options", "nbd"}, path));
  TERN_ASSIGN_OR_RETURN(c.cores, get<std::string>(root, "cores", c.cores, path));
  TERN_ASSIGN_OR_RETURN(c.log_level, get<std::string>(root, "log_level", c.log_level, path));
  TERN_ASSIGN_OR_RETURN(c.devices, get<std::vector<std::string>>(root, "devices", {}, path));
  TERN_ASSIGN_OR_RETURN(c.listeners, get<std::vector<std::string>>(root, "listeners", {}, path));
  if (auto o = root["options"]) {
    std::string w = path + ": options";
    TERN_RETURN_IF_ERROR(check_keys(o, {"max_queue_depth", "max_io_queues", "in_capsule_data_size", "max_io_size",
                                        "c2h_success", "max_keep_alive_ms", "max_h2c_data"}, w));
    TERN_ASSIGN_OR_RETURN(c.options.max_queue_depth, get<uint32_t>(o, "max_queue_depth", c.options.max_queue_depth, w));
    TERN_ASSIGN_OR_RETURN(c.options.max_io_queues, get<uint32_t>(o, "max_io_queues", c.options.max_io_queues, w));
    TERN_ASSIGN_OR_RETURN(c.options.in_capsule_data_size,
                          get<uint32_t>(o, "in_capsule_data_size", c.options.in_capsule_data_size, w));
    TERN_ASSIGN_OR_RETURN(c.options.max_io_size, get<uint32_t>(o, "max_io_size", c.options.max_io_size, w));
    TERN_ASSIGN_OR_RETURN(c.options.c2h_success, get<bool>(o, "c2h_success", c.options.c2h_success, w));
    TERN_ASSIGN_OR_RETURN(c.options.max_keep_alive_ms, get<uint32_t>(o, "max_keep_alive_ms", c.options.max_keep_alive_ms, w));
    // MAXH2CDATA: by default one H2CData PDU can carry a whole command's data.
    TERN_ASSIGN_OR_RETURN(c.options.max_h2c_data, get<uint32_t>(o, "max_h2c_data", c.options.max_io_size, w));
    if (c.options.max_h2c_data < 4096 || c.options.max_h2c_data % 4 != 0) {
      return Status::Errorf(Errc::kInval, "{}: max_h2c_data {} must be a multiple of 4 and at least 4096", w,
                            c.options.max_h2c_data);
    }
  }
  if (auto n = root["nbd"]) {
    std::string w = path + ": nbd";
    TERN_RETURN_IF_ERROR(check_keys(n, {"listen", "unix", "exports", "max_inflight", "drain_timeout_ms"}, w));
    c.nbd.enabled = true;
    TERN_ASSIGN_OR_RETURN(c.nbd.listen, get<std::string>(n, "listen", "", w));
    if (!c.nbd.listen.empty()) {
      auto a = parse_listen_addr(c.nbd.listen);
      if (!a.ok()) return a.status().WithContext(w);
    }
    TERN_ASSIGN_OR_RETURN(c.nbd.unix_path, get<std::string>(n, "unix", "", w));
    TERN_ASSIGN_OR_RETURN(c.nbd.max_inflight, get<uint32_t>(n, "max_inflight", c.nbd.max_inflight, w));
    TERN_ASSIGN_OR_RETURN(c.nbd.drain_timeout_ms, get<uint64_t>(n, "drain_timeout_ms", c.nbd.drain_timeout_ms, w));
    if (auto ex = n["exports"]) {
      if (!ex.IsSequence()) return Status::Errorf(Errc::kInval, "{}: 'exports' must be a list", w);
      size_t j = 0;
      for (const auto& m : ex) {
        std::string we = fmt::format("{}.exports[{}]", w, j++);
        TERN_RETURN_IF_ERROR(check_keys(m, {"name", "device", "read_only"}, we));
        NbdExportSpec e;
        TERN_ASSIGN_OR_RETURN(e.name, get<std::string>(m, "name", "", we));
        TERN_ASSIGN_OR_RETURN(e.device, get<std::string>(m, "device", "", we));
        TERN_ASSIGN_OR_RETURN(e.read_only, get<bool>(m, "read_only", false, we));
        if (e.device.empty()) return Status::Errorf(Errc::kInval, "{}: 'device' is required", we);
        if (e.name.empty()) e.name = e.device;
        c.nbd.exports.push_back(std::move(e));
      }
    }
  }
  if (auto subs = root["subsystems"]) {
    if (!subs.IsSequence()) return Status::Errorf(Errc::kInval, "{}: 'subsystems' must be a list", path);
    size_t i = 0;
    for (const auto& n : subs) {
      std::string w = fmt::format("{}: subsystems[{}]", path, i++);
      TERN_RETURN_IF_ERROR(check_keys(n, {"nqn", "serial", "model", "allow_any_host", "hosts", "cntlid_min",
                                          "cntlid_max", "ana_reporting", "listeners", "namespaces", "ana"}, w));
      SubsystemSpec s;
      TERN_ASSIGN_OR_RETURN(s.cfg.nqn, get<std::string>(n, "nqn", "", w));
      if (s.cfg.nqn.empty()) return Status::Errorf(Errc::kInval, "{}: 'nqn' is required", w);
      TERN_ASSIGN_OR_RETURN(s.cfg.serial, get<std::string>(n, "serial", "", w));
      TERN_ASSIGN_OR_RETURN(s.cfg.model, get<std::string>(n, "model", s.cfg.model, w));
      TERN_ASSIGN_OR_RETURN(s.cfg.allow_any_host, get<bool>(n, "allow_any_host", false, w));
      TERN_ASSIGN_OR_RETURN(s.cfg.hosts, get<std::vector<std::string>>(n, "hosts", {}, w));
      TERN_ASSIGN_OR_RETURN(s.cfg.cntlid_min, get<uint16_t>(n, "cntlid_min", 1, w));
      TERN_ASSIGN_OR_RETURN(s.cfg.cntlid_max, get<uint16_t>(n, "cntlid_max", 0xFFEF, w));
      TERN_ASSIGN_OR_RETURN(s.cfg.ana_reporting, get<bool>(n, "ana_reporting", true, w));
      TERN_ASSIGN_OR_RETURN(s.listeners, get<std::vector<std::string>>(n, "listeners", {}, w));
      if (auto nss = n["namespaces"]) {
        size_t j = 0;
        for (const auto& m : nss) {
          std::string wn = fmt::format("{}.namespaces[{}]", w, j++);
          TERN_RETURN_IF_ERROR(check_keys(m, {"device", "nsid", "ana_group"}, wn));
          NamespaceSpec ns;
          TERN_ASSIGN_OR_RETURN(ns.device, get<std::string>(m, "device", "", wn));
          TERN_ASSIGN_OR_RETURN(ns.nsid, get<uint32_t>(m, "nsid", 0, wn));
          TERN_ASSIGN_OR_RETURN(ns.ana_group, get<uint32_t>(m, "ana_group", 0, wn));
          s.namespaces.push_back(ns);
        }
      }
      if (auto as = n["ana"]) {
        size_t j = 0;
        for (const auto& m : as) {
          std::string wa = fmt::format("{}.ana[{}]", w, j++);
          TERN_RETURN_IF_ERROR(check_keys(m, {"listener", "group", "state"}, wa));
          AnaSpec a;
          TERN_ASSIGN_OR_RETURN(a.listener, get<std::string>(m, "listener", "", wa));
          TERN_ASSIGN_OR_RETURN(a.group, get<uint32_t>(m, "group", 1, wa));
          TERN_ASSIGN_OR_RETURN(a.state, get<std::string>(m, "state", "optimized", wa));
          s.ana.push_back(a);
        }
      }
      c.subsystems.push_back(std::move(s));
    }
  }
  return c;
}

}  // namespace tern::tgt
