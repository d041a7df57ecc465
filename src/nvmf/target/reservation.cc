// Reservations (NVMe Base 2.0, 8.19): Register, Acquire (acquire / preempt / preempt and abort), Release
// (release / clear) and Report, with all six reservation types. State lives on the primary reactor in
// the namespace; the I/O path sees it through the subsystem view and enforces it per command.
#include <cstring>
#include <optional>

#include "common/log.h"
#include "nvmf/target/controller.h"
#include "nvmf/target/target.h"

namespace tern::nvmf {

using namespace tern::nvme;

namespace {

AdminResult status_only(CmdStatus s) {
  AdminResult r;
  r.status = s;
  return r;
}

uint64_t load_key(const std::vector<uint8_t>& d, size_t off) {
  le64 v;
  std::memcpy(&v, d.data() + off, 8);
  return v;
}

bool all_registrants(ResvType t) { return t == ResvType::kWriteExclusiveAllRegs || t == ResvType::kExclusiveAccessAllRegs; }

constexpr uint8_t kNoticeRegistrationPreempted = 1;
constexpr uint8_t kNoticeReservationReleased = 2;
constexpr uint8_t kNoticeReservationPreempted = 3;

}  // namespace

bool reservation_allows(const Reservation& rv, const std::array<uint8_t, 16>& hostid, bool is_read, bool is_write) {
  if (!rv.held()) return true;
  const bool holder = !all_registrants(rv.type) && rv.holder == hostid;
  bool registered = false;
  for (auto& reg : rv.registrants) registered |= reg.hostid == hostid;
  switch (rv.type) {
    case ResvType::kWriteExclusive: return holder || !is_write;
    case ResvType::kExclusiveAccess: return holder || (!is_write && !is_read);
    case ResvType::kWriteExclusiveRegsOnly:
    case ResvType::kWriteExclusiveAllRegs: return holder || registered || !is_write;
    case ResvType::kExclusiveAccessRegsOnly:
    case ResvType::kExclusiveAccessAllRegs: return holder || registered || (!is_write && !is_read);
    case ResvType::kNone: break;
  }
  return true;
}

AdminResult Target::reservation_command(Subsystem* s, Controller* ctrl, const Sqe& sqe, std::vector<uint8_t> data,
                                        uint32_t xfer_len) {
  return reservation_command_as(s, ctrl, ctrl->hostid(), sqe, std::move(data), xfer_len);
}

Result<AdminResult> Target::local_reservation_command(const std::string& bdev, const std::array<uint8_t, 16>& hostid,
                                                      const Sqe& sqe, const std::vector<uint8_t>& data,
                                                      uint32_t xfer_len) {
  std::optional<AdminResult> first;
  for (auto& [nqn, s] : subsystems_) {
    for (auto& [nsid, ns] : s->namespaces()) {
      if (!ns.desc || ns.desc->bdev().name() != bdev) continue;
      Sqe c = sqe;
      c.nsid = nsid;
      AdminResult r = reservation_command_as(s.get(), nullptr, hostid, c, data, xfer_len);
      if (!first) first = std::move(r);
    }
  }
  if (!first) return Status::Errorf(Errc::kNoEnt, "no namespace exposes device '{}'", bdev);
  return std::move(*first);
}

void Target::watch_local_reservation(const std::string& bdev, const std::array<uint8_t, 16>& hostid,
                                     std::function<void()> fenced) {
  std::erase_if(local_resv_watches_, [&](const LocalResvWatch& w) { return w.bdev == bdev && w.hostid == hostid; });
  if (fenced) local_resv_watches_.push_back({bdev, hostid, std::move(fenced)});
}

AdminResult Target::reservation_command_as(Subsystem* s, Controller* ctrl, const std::array<uint8_t, 16>& me,
                                           const Sqe& sqe, std::vector<uint8_t> data, uint32_t xfer_len) {
  const uint32_t nsid = sqe.nsid;
  Subsystem::Namespace* ns = s->ns(nsid);
  if (!ns) return status_only(CmdStatus::Generic(sc::kInvalidNamespace));
  Reservation& rv = ns->resv;
  const uint32_t cdw10 = sqe.cdw10;
  const uint8_t action = uint8_t(cdw10 & 7);
  const bool iekey = cdw10 & (1u << 3);
  const auto conflict = CmdStatus::Generic(sc::kReservationConflict);

  auto find = [&](const std::array<uint8_t, 16>& id) -> Registrant* {
    for (auto& r : rv.registrants)
      if (r.hostid == id) return &r;
    return nullptr;
  };
  auto notify = [&](const std::array<uint8_t, 16>& host, uint8_t type) {
    for (Controller* c : s->controllers())
      if (c->hostid() == host && c != ctrl) c->reservation_notice(type, nsid);
    // A local host (a nexus's local child) loses its registration or the reservation: it is fenced.
    if (type == kNoticeReservationReleased || host == me || !ns->desc) return;
    for (auto& w : local_resv_watches_)
      if (w.hostid == host && w.bdev == ns->desc->bdev().name() && w.fenced) w.fenced();
  };
  auto holds = [&](const std::array<uint8_t, 16>& id) {
    if (!rv.held()) return false;
    if (all_registrants(rv.type)) return find(id) != nullptr;
    return rv.holder == id;
  };

  CmdStatus st = CmdStatus::Ok();
  switch (sqe.opc) {
    case opc::kReservationRegister: {
      if (data.size() < 16) return status_only(CmdStatus::Generic(sc::kDataSglLengthInvalid));
      const uint64_t crkey = load_key(data, 0), nrkey = load_key(data, 8);
      const uint32_t cptpl = cdw10 >> 30;
      // 01b is reserved; 11b asks for persistence through power loss, which we do not have.
      if (cptpl == 1 || cptpl == 3) return status_only(CmdStatus::Generic(sc::kInvalidField));
      Registrant* reg = find(me);
      switch (action) {
        case 0:  // register
          if (reg) {
            if (reg->key != nrkey) st = conflict;
            break;
          }
          rv.registrants.push_back({me, nrkey});
          ++rv.generation;
          break;
        case 1:  // unregister
          if (!reg || (!iekey && reg->key != crkey)) {
            st = conflict;
            break;
          }
          {
            const bool was_holder = holds(me);
            rv.registrants.erase(rv.registrants.begin() + (reg - rv.registrants.data()));
            ++rv.generation;
            if (was_holder && (!all_registrants(rv.type) || rv.registrants.empty())) {
              const ResvType old = rv.type;
              rv.type = ResvType::kNone;
              if (old != ResvType::kWriteExclusive && old != ResvType::kExclusiveAccess) {
                for (auto& r : rv.registrants) notify(r.hostid, kNoticeReservationReleased);
              }
            }
          }
          break;
        case 2:  // replace
          if (!reg || (!iekey && reg->key != crkey)) {
            st = conflict;
            break;
          }
          reg->key = nrkey;
          ++rv.generation;
          break;
        default:
          st = CmdStatus::Generic(sc::kInvalidField);
      }
      break;
    }
    case opc::kReservationAcquire: {
      if (data.size() < 16) return status_only(CmdStatus::Generic(sc::kDataSglLengthInvalid));
      const uint64_t crkey = load_key(data, 0), prkey = load_key(data, 8);
      const auto rtype = ResvType((cdw10 >> 8) & 0xff);
      if (uint8_t(rtype) < 1 || uint8_t(rtype) > 6) return status_only(CmdStatus::Generic(sc::kInvalidField));
      Registrant* reg = find(me);
      if (!reg || reg->key != crkey) {
        st = conflict;
        break;
      }
      if (action == 0) {  // acquire
        if (!rv.held()) {
          rv.type = rtype;
          rv.holder = me;
        } else if (!holds(me) || rv.type != rtype) {
          st = conflict;
        }
        break;
      }
      if (action != 1 && action != 2) {
        st = CmdStatus::Generic(sc::kInvalidField);
        break;
      }
      // Preempt (and abort: commands already on the devices complete; nothing new from the preempted
      // hosts passes the reservation check from here on).
      auto preempt_key = [&](uint64_t key, bool keep_me) {
        size_t removed = 0;
        for (size_t i = 0; i < rv.registrants.size();) {
          Registrant& r = rv.registrants[i];
          if (r.key == key && !(keep_me && r.hostid == me)) {
            notify(r.hostid, kNoticeRegistrationPreempted);
            rv.registrants.erase(rv.registrants.begin() + long(i));
            ++removed;
          } else {
            ++i;
          }
        }
        return removed;
      };
      if (!rv.held()) {
        if (preempt_key(prkey, true) == 0) st = conflict;
      } else if (all_registrants(rv.type)) {
        if (prkey == 0) {
          for (size_t i = 0; i < rv.registrants.size();) {
            if (rv.registrants[i].hostid != me) {
              notify(rv.registrants[i].hostid, kNoticeReservationPreempted);
              rv.registrants.erase(rv.registrants.begin() + long(i));
            } else {
              ++i;
            }
          }
          rv.type = rtype;
          rv.holder = me;
        } else if (preempt_key(prkey, true) == 0) {
          st = conflict;
        }
      } else {
        Registrant* holder = find(rv.holder);
        if (holder && holder->key == prkey) {
          const auto old_holder = rv.holder;
          preempt_key(prkey, true);
          if (old_holder != me) notify(old_holder, kNoticeReservationPreempted);
          rv.type = rtype;
          rv.holder = me;
        } else if (prkey == 0) {
          // Not the holder's key, and zero: Invalid Field (NVMe Base 2.0, 8.19.7), not a conflict.
          st = CmdStatus::Generic(sc::kInvalidField);
        } else if (preempt_key(prkey, true) == 0) {
          st = conflict;
        }
      }
      if (st.ok()) ++rv.generation;
      break;
    }
    case opc::kReservationRelease: {
      if (data.size() < 8) return status_only(CmdStatus::Generic(sc::kDataSglLengthInvalid));
      const uint64_t crkey = load_key(data, 0);
      const auto rtype = ResvType((cdw10 >> 8) & 0xff);
      Registrant* reg = find(me);
      if (!reg || (!iekey && reg->key != crkey)) {
        st = conflict;
        break;
      }
      if (action == 0) {  // release
        if (!rv.held() || !holds(me)) break;  // nothing of ours to release: success
        if (rtype != rv.type) {
          st = CmdStatus::Generic(sc::kInvalidField);
          break;
        }
        const ResvType old = rv.type;
        rv.type = ResvType::kNone;
        if (old != ResvType::kWriteExclusive && old != ResvType::kExclusiveAccess) {
          for (auto& r : rv.registrants)
            if (r.hostid != me) notify(r.hostid, kNoticeReservationReleased);
        }
      } else if (action == 1) {  // clear
        for (auto& r : rv.registrants)
          if (r.hostid != me) notify(r.hostid, kNoticeReservationPreempted);
        rv.registrants.clear();
        rv.type = ResvType::kNone;
        ++rv.generation;
      } else {
        st = CmdStatus::Generic(sc::kInvalidField);
      }
      break;
    }
    case opc::kReservationReport: {
      if (!(uint32_t(sqe.cdw11) & 1)) {
        // Our host identifiers are 128-bit: only the extended data structure can carry them.
        return status_only(CmdStatus::Generic(sc::kHostIdInconsistentFormat));
      }
      const uint64_t len = (uint64_t(cdw10) + 1) * 4;
      // NUMD may ask for up to 16 GiB; the command's buffer bounds what is sent.
      if (len > xfer_len) return status_only(CmdStatus::Generic(sc::kDataSglLengthInvalid));
      std::vector<uint8_t> out(sizeof(ResvStatusExtHeader) + rv.registrants.size() * sizeof(ResvRegisteredControllerExt));
      ResvStatusExtHeader h;
      std::memset(&h, 0, sizeof(h));
      h.gen = rv.generation;
      h.rtype = uint8_t(rv.type);
      h.regctl = uint16_t(rv.registrants.size());
      std::memcpy(out.data(), &h, sizeof(h));
      for (size_t i = 0; i < rv.registrants.size(); ++i) {
        const Registrant& r = rv.registrants[i];
        ResvRegisteredControllerExt e;
        std::memset(&e, 0, sizeof(e));
        e.cntlid = 0xFFFF;
        for (Controller* c : s->controllers())
          if (c->hostid() == r.hostid) e.cntlid = c->cntlid();
        e.rcsts = holds(r.hostid) ? 1 : 0;
        e.rkey = r.key;
        std::memcpy(e.hostid, r.hostid.data(), 16);
        std::memcpy(out.data() + sizeof(h) + i * sizeof(e), &e, sizeof(e));
      }
      out.resize(size_t(len), 0);
      AdminResult res;
      res.data = std::move(out);
      return res;
    }
    default:
      return status_only(CmdStatus::Generic(sc::kInvalidOpcode));
  }
  if (st.ok()) s->publish();
  return status_only(st);
}

}  // namespace tern::nvmf
