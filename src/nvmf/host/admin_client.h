// AdminClient: an admin queue to any NVMe/TCP controller, for control paths — the device backend's
// bring-up, the discovery client and the `ternctl nvme` commands. Not on the I/O path.
//
// Threads: lives on the reactor that opened it; every method runs there.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "nvmf/host/host_qpair.h"
#include "nvmf/spec.h"

namespace tern::nvmf {

struct DiscoveryRecord {
  uint8_t trtype = 0, adrfam = 0, subtype = 0, treq = 0, sectype = 0;
  uint16_t portid = 0, cntlid = 0, asqsz = 0, eflags = 0;
  std::string trsvcid, traddr, subnqn;
};

struct DiscoveryLog {
  uint64_t genctr = 0;
  std::vector<DiscoveryRecord> records;
};

struct NsDescriptor {
  uint8_t type = 0;  // 1 EUI-64, 2 NGUID, 3 UUID, 4 CSI
  std::vector<uint8_t> value;
};

class AdminClient {
 public:
  // Connects the admin queue, enables the controller and waits for CSTS.RDY (bounded by CAP.TO).
  static Task<Result<std::unique_ptr<AdminClient>>> Open(const HostParams& p);

  Task<Result<nvme::IdentifyController>> identify_controller();
  Task<Result<nvme::IdentifyNamespace>> identify_namespace(uint32_t nsid);
  Task<Result<std::vector<uint32_t>>> active_namespaces();
  Task<Result<std::vector<NsDescriptor>>> namespace_descriptors(uint32_t nsid);
  // Get Log Page with offset; `len` bytes (multiple of 4).
  Task<Result<std::vector<uint8_t>>> get_log(uint8_t lid, uint32_t len, uint64_t offset = 0, uint32_t nsid = 0xFFFFFFFF);
  // The whole discovery log, read consistently (re-read if the generation counter moved meanwhile).
  Task<Result<DiscoveryLog>> discovery_log();
  // One admin command; the reply's status is turned into a Status naming `what`.
  Task<Result<std::vector<uint8_t>>> run(const char* what, nvme::Sqe sqe, std::vector<uint8_t> out, uint32_t in_len);

  HostQpair& qpair() { return *qp_; }
  // Hands the connected queue pair over (the device backend keeps it as its admin queue).
  std::unique_ptr<HostQpair> release() { return std::move(qp_); }
  // Closes the connection; waits until the socket is gone.
  Task<void> close();

 private:
  explicit AdminClient(const HostParams& p, std::unique_ptr<HostQpair> qp) : params_(p), qp_(std::move(qp)) {}
  Status fail(const char* what, const HostQpair::Reply& r) const;

  HostParams params_;
  std::unique_ptr<HostQpair> qp_;
};

const char* trtype_name(uint8_t t);
const char* adrfam_name(uint8_t a);
const char* subtype_name(uint8_t s);
const char* treq_name(uint8_t t);

}  // namespace tern::nvmf
