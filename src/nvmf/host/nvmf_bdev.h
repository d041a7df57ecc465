// The NVMe/TCP initiator as a device backend:
//
//   nvmf://host[:port]/<subnqn>?nsid=1&hostnqn=...&hostid=...&io_queues=N&qd=N&hdgst=1&ddgst=1
//         &timeout_ms=30000&kato_ms=10000&ctrl_loss_tmo_s=60&reconnect_delay_ms=1000&uuid=U
//
// One admin queue on the primary reactor; one I/O queue per reactor (up to io_queues), each living on
// its reactor. Keep-alive from the primary; per-command deadlines checked on each reactor: an expired
// command gets an Abort, and if it is still outstanding a second later the controller is reset. Lost
// connections fail what was in flight (ECONNRESET) and reconnect with back-off; new I/O while
// reconnecting fails at once (EAGAIN) rather than hang. After ctrl_loss_tmo_s without a controller the
// device removes itself (holders get BdevEvent::kRemove).
#pragma once

#include "bdev/registry.h"
#include "nvmf/spec.h"

namespace tern::nvmf {

// An NVM command the device layer does not carry (reservations), sent on the calling reactor's I/O queue
// of an nvmf:// device: `data_out` goes to the controller, `data_in_len` bytes come back. The reply's NVMe
// status is in `status` (kOk: the command was carried; the status says how it went). Errors: kNotSup for
// a device that is not nvmf://, kAgain while it reconnects, the transport's error otherwise.
struct PassthruReply {
  nvme::CmdStatus status;
  uint32_t dw0 = 0;
  std::vector<uint8_t> data;
};
Task<Result<PassthruReply>> io_passthru(Bdev& dev, nvme::Sqe sqe, std::vector<uint8_t> data_out, uint32_t data_in_len);

// An admin command on the admin queue of an nvmf:// device (primary reactor): its namespace ID is the
// device's. Same reply and errors as io_passthru.
Task<Result<PassthruReply>> admin_passthru(Bdev& dev, nvme::Sqe sqe, std::vector<uint8_t> data_out,
                                           uint32_t data_in_len);

// Adds the nvmf:// (and nvmf+tcp://) scheme to `registry`.
void register_nvmf_backend(BdevRegistry& registry);

// The host NQN used when none is given: nqn.2026-11.io.tern:node-name:<hostname>.
std::string default_host_nqn();
// A stable 128-bit host identifier derived from a host NQN.
std::array<uint8_t, 16> host_id_for(const std::string& hostnqn);

}  // namespace tern::nvmf
