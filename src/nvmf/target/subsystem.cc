#include "nvmf/target/subsystem.h"

#include <algorithm>

#include <fmt/format.h>

namespace tern::nvmf {

std::string ListenAddr::to_string() const {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

const NamespaceView* SubsystemView::find(uint32_t nsid) const {
  auto it = std::lower_bound(namespaces.begin(), namespaces.end(), nsid,
                             [](const NamespaceView& n, uint32_t id) { return n.nsid < id; });
  return it != namespaces.end() && it->nsid == nsid ? &*it : nullptr;
}

nvme::AnaState SubsystemView::ana_state(const ListenAddr& l, uint32_t grp) const {
  auto it = ana.find({l, grp});
  return it == ana.end() ? nvme::AnaState::kOptimized : it->second;
}

Subsystem::Subsystem(SubsystemConfig cfg, bool discovery)
    : cfg_(std::move(cfg)), discovery_(discovery), next_cntlid_(cfg_.cntlid_min) {
  publish();
}

Subsystem::~Subsystem() = default;

bool Subsystem::host_allowed(const std::string& hostnqn) const {
  if (discovery_ || cfg_.allow_any_host) return true;
  return std::find(cfg_.hosts.begin(), cfg_.hosts.end(), hostnqn) != cfg_.hosts.end();
}

bool Subsystem::add_host(const std::string& hostnqn) {
  if (std::find(cfg_.hosts.begin(), cfg_.hosts.end(), hostnqn) != cfg_.hosts.end()) return false;
  cfg_.hosts.push_back(hostnqn);
  return true;
}

bool Subsystem::remove_host(const std::string& hostnqn) {
  auto it = std::find(cfg_.hosts.begin(), cfg_.hosts.end(), hostnqn);
  if (it == cfg_.hosts.end()) return false;
  cfg_.hosts.erase(it);
  return true;
}

bool Subsystem::listens_on(const ListenAddr& a) const {
  if (discovery_) return true;
  for (auto& l : cfg_.listeners) {
    if (l.port != a.port) continue;
    if (l.host == a.host || l.host == "0.0.0.0" || l.host == "::") return true;
  }
  return false;
}

void Subsystem::add_listener(const ListenAddr& a) {
  if (std::find(cfg_.listeners.begin(), cfg_.listeners.end(), a) == cfg_.listeners.end()) cfg_.listeners.push_back(a);
}

bool Subsystem::remove_listener(const ListenAddr& a) {
  auto it = std::find(cfg_.listeners.begin(), cfg_.listeners.end(), a);
  if (it == cfg_.listeners.end()) return false;
  cfg_.listeners.erase(it);
  return true;
}

Result<uint32_t> Subsystem::add_namespace(std::unique_ptr<BdevDesc> desc, uint32_t nsid, uint32_t anagrpid) {
  if (discovery_) return Status(Errc::kInval, "the discovery subsystem has no namespaces");
  if (nsid == 0) {
    nsid = 1;
    while (namespaces_.count(nsid)) ++nsid;
  }
  if (nsid > cfg_.max_namespaces || nsid == 0xFFFFFFFF) {
    return Status::Errorf(Errc::kInval, "namespace id {} is out of range (1..{})", nsid, cfg_.max_namespaces);
  }
  if (namespaces_.count(nsid)) {
    return Status::Errorf(Errc::kExist, "subsystem '{}' already has namespace {}", cfg_.nqn, nsid);
  }
  for (auto& [id, ns] : namespaces_) {
    if (ns.desc->bdev().props().uuid == desc->bdev().props().uuid) {
      return Status::Errorf(Errc::kExist, "device '{}' is already namespace {} of subsystem '{}'", desc->bdev().name(),
                            id, cfg_.nqn);
    }
  }
  if (anagrpid == 0) anagrpid = nsid;
  namespaces_.emplace(nsid, Namespace{nsid, std::move(desc), anagrpid, {}});
  publish();
  return nsid;
}

std::unique_ptr<BdevDesc> Subsystem::remove_namespace(uint32_t nsid) {
  auto it = namespaces_.find(nsid);
  if (it == namespaces_.end()) return nullptr;
  std::unique_ptr<BdevDesc> d = std::move(it->second.desc);
  namespaces_.erase(it);
  publish();
  return d;
}

Subsystem::Namespace* Subsystem::ns(uint32_t nsid) {
  auto it = namespaces_.find(nsid);
  return it == namespaces_.end() ? nullptr : &it->second;
}

void Subsystem::set_ana_state(const ListenAddr& l, uint32_t anagrpid, nvme::AnaState s) {
  ana_[{l, anagrpid}] = s;
  ++ana_chgcnt_;
  publish();
}

nvme::AnaState Subsystem::ana_state(const ListenAddr& l, uint32_t anagrpid) const {
  auto it = ana_.find({l, anagrpid});
  return it == ana_.end() ? nvme::AnaState::kOptimized : it->second;
}

std::set<uint32_t> Subsystem::ana_groups() const {
  std::set<uint32_t> g;
  for (auto& [id, ns] : namespaces_) g.insert(ns.anagrpid);
  return g;
}

Result<uint16_t> Subsystem::allocate_cntlid() {
  uint32_t span = uint32_t(cfg_.cntlid_max) - cfg_.cntlid_min + 1;
  for (uint32_t i = 0; i < span; ++i) {
    uint16_t id = next_cntlid_;
    next_cntlid_ = id >= cfg_.cntlid_max ? cfg_.cntlid_min : uint16_t(id + 1);
    if (!cntlids_in_use_.count(id)) {
      cntlids_in_use_.insert(id);
      return id;
    }
  }
  return Status::Errorf(Errc::kBusy, "subsystem '{}' has no free controller id in {}..{}", cfg_.nqn, cfg_.cntlid_min,
                        cfg_.cntlid_max);
}

void Subsystem::release_cntlid(uint16_t id) { cntlids_in_use_.erase(id); }

void Subsystem::publish() {
  auto v = std::make_shared<SubsystemView>();
  v->version = version_.load(std::memory_order_relaxed) + 1;
  for (auto& [id, ns] : namespaces_) {
    NamespaceView nv;
    nv.nsid = id;
    nv.desc = ns.desc.get();
    nv.bdev = &ns.desc->bdev();
    nv.block_size = nv.bdev->props().block_size;
    nv.num_blocks = nv.bdev->props().num_blocks;
    nv.anagrpid = ns.anagrpid;
    nv.resv = ns.resv;
    v->namespaces.push_back(std::move(nv));
  }
  v->ana = ana_;
  std::lock_guard lk(view_mu_);
  view_ = std::move(v);
  version_.store(view_->version, std::memory_order_release);
}

std::shared_ptr<const SubsystemView> Subsystem::view() const {
  std::lock_guard lk(view_mu_);
  return view_;
}

}  // namespace tern::nvmf
