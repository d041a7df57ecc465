#include "engine/engine.h"

#include "common/log.h"
#include "nvmf/host/nvmf_bdev.h"
#include "store/etcd_record_store.h"

#ifndef TERN_VERSION
#define TERN_VERSION "0.0.0"
#endif
#ifndef TERN_GIT_REV
#define TERN_GIT_REV "unknown"
#endif
#ifndef TERN_BUILD_TYPE
#define TERN_BUILD_TYPE "unknown"
#endif

namespace tern::engine {

Engine::Engine(ReactorSet& reactors, EngineOptions opts)
    : reactors_(reactors), opts_(std::move(opts)), registry_(reactors) {
  nvmf::register_nvmf_backend(registry_);
  target_ = std::make_unique<nvmf::Target>(reactors_, registry_);
}

Engine::~Engine() = default;

const std::string& Engine::nbd_client_host() const {
  const bool wildcard = opts_.nbd_address == "0.0.0.0" || opts_.nbd_address == "::";
  return wildcard ? opts_.advertise_address : opts_.nbd_address;
}

Task<Status> Engine::start() {
  auto port = target_->listen(opts_.nvmf_address, opts_.nvmf_port);
  if (!port.ok()) {
    co_return Status::Errorf(port.code(), "NVMe/TCP listener on {}:{}: {}", opts_.nvmf_address, opts_.nvmf_port,
                             port.status().message());
  }
  opts_.nvmf_port = *port;
  ShareEndpoints ep;
  ep.nvmf = nvmf::ListenAddr{opts_.nvmf_address, *port};
  ep.advertise = opts_.advertise_address;
  TERN_CO_RETURN_IF_ERROR(start_nbd(ep));

  shares_ = std::make_unique<Shares>(*target_, nbd_.get(), ep);
  pools_ = std::make_unique<PoolManager>(registry_, *shares_, opts_.state_dir);
  devices_ = std::make_unique<DeviceManager>(reactors_, registry_, *target_, ep.nvmf, *shares_, *pools_);
  test_hooks_ = std::make_unique<TestHooks>(registry_);
  if (!opts_.etcd.empty()) {
    store::EtcdOptions eo;
    for (size_t at = 0; at <= opts_.etcd.size();) {
      size_t comma = opts_.etcd.find(',', at);
      if (comma == std::string::npos) comma = opts_.etcd.size();
      if (comma > at) eo.endpoints.push_back(opts_.etcd.substr(at, comma - at));
      at = comma + 1;
    }
    eo.request_timeout_ns = opts_.etcd_timeout_ms * 1'000'000ull;
    auto c = store::EtcdClient::Create(eo);
    if (!c.ok()) co_return c.status().WithContext("--etcd");
    etcd_ = std::move(*c);
    store_ = std::make_unique<store::EtcdRecordStore>(etcd_.get());
  }
  snapshots_ = std::make_unique<ReplicaSnapshots>(*pools_);
  snapshots_->serve(*target_);
  nexuses_ = std::make_unique<NexusManager>(registry_, *target_, *shares_, ep.nvmf, store_.get(), snapshots_.get(),
                                            opts_.node_name.empty() ? nvmf::default_host_nqn()
                                                                    : kNodeNqnPrefix + opts_.node_name,
                                            opts_.nexus_persist_timeout_ms * 1'000'000ull);
  co_return co_await pools_->start(opts_.pools);
}

Status Engine::start_nbd(ShareEndpoints& ep) {
  if (opts_.nbd_port == 0 && opts_.nbd_socket.empty()) return Status::Ok();
  nbd::ServerOptions no;
  no.tcp = opts_.nbd_port != 0;
  no.tcp_host = opts_.nbd_address;
  no.tcp_port = opts_.nbd_port;
  no.unix_path = opts_.nbd_socket;
  auto n = nbd::Server::Create(reactors_, registry_, no);
  if (!n.ok()) {
    return Status::Errorf(n.code(), "NBD server ({}): {}",
                          no.tcp ? fmt::format("{}:{}", no.tcp_host, no.tcp_port) : no.unix_path, n.status().message());
  }
  nbd_ = std::move(*n);
  if (no.tcp) opts_.nbd_port = nbd_->tcp_port();
  ep.nbd_host = nbd_client_host();
  ep.nbd_port = no.tcp ? opts_.nbd_port : 0;
  return Status::Ok();
}

Task<void> Engine::shutdown() {
  if (stopped_) co_return;
  stopped_ = true;
  // Nexuses first: their children are pools' replicas (and remote devices); each records a clean
  // shutdown before it goes.
  if (nexuses_) co_await nexuses_->shutdown_all();
  // Pools then stop opening and closing, so none appears or goes while its shares are taken down.
  if (pools_) co_await pools_->stop();
  if (shares_) co_await shares_->unshare_all();
  if (nbd_) co_await nbd_->stop();
  co_await target_->shutdown();
  if (snapshots_) snapshots_->stop(*target_);
  if (pools_) co_await pools_->export_all();
  co_await registry_.destroy_all();
  if (etcd_) co_await etcd_->close();
}

NodeInfo Engine::node_info() const {
  NodeInfo n;
  n.node_name = opts_.node_name;
  n.version = TERN_VERSION;
  n.build = fmt::format("{} {} gcc {}", TERN_GIT_REV, TERN_BUILD_TYPE, __VERSION__);
  n.instance = instance_;
  for (unsigned r = 0; r < reactors_.size(); ++r) n.cores.push_back(uint32_t(reactors_.reactor(r).cpu()));
  n.uptime = std::chrono::steady_clock::now() - started_;
  n.grpc_endpoint = opts_.grpc_endpoint;
  n.nvmf_endpoint = fmt::format("{}:{}", opts_.advertise_address, opts_.nvmf_port);
  if (opts_.nbd_port) {
    n.nbd_endpoint = fmt::format("{}:{}", nbd_client_host(), opts_.nbd_port);
  } else if (!opts_.nbd_socket.empty()) {
    n.nbd_endpoint = "unix:" + opts_.nbd_socket;
  }
  n.startup_ms = startup_ms_;
  return n;
}

}  // namespace tern::engine
