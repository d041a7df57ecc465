// libFuzzer target for every parser that takes text from outside: device URIs (which arrive over gRPC
// and in config files), error-injection rules, sizes, durations and UUIDs; and the reply of tern's
// block-status vendor command (nvmf/vendor.h), which a rebuild reads from another engine; and the nexus's
// metadata pages (label, rebuild checkpoint, activity-log transaction, slot table), which a nexus reads
// from its children, remote ones over the network; and the control plane's specs (JSON from etcd).
// The first byte picks the parser; the rest is its input. Properties checked besides "no crash, no
// sanitizer report": accepted URIs keep their text and re-parse to the same parts; accepted rules
// round-trip through ToString; accepted UUIDs round-trip through their canonical form.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "bdev/fault_bdevs.h"
#include "common/units.h"
#include "common/uri.h"
#include "common/uuid.h"
#include "control/specs.h"
#include "nexus/dirty_log.h"
#include "nexus/layout.h"
#include "nvmf/vendor.h"

using namespace tern;

static void check(bool ok) {
  if (!ok) std::abort();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 8) {
    case 0: {
      auto u = Uri::Parse(in);
      if (!u.ok()) {
        check(u.code() == Errc::kInval && !u.status().message().empty());
        break;
      }
      check(u->text == in);
      auto again = Uri::Parse(u->text);
      check(again.ok() && again->scheme == u->scheme && again->host == u->host && again->path == u->path &&
            again->query == u->query && again->port == u->port);
      auto q = UriQuery::Make(*u, {"size_mb", "blk_size", "uuid", "direct"});
      if (q.ok()) {
        (void)q->u64("size_mb");
        (void)q->boolean("direct");
        (void)q->choice("blk_size", {"512", "4096"});
      }
      (void)u->authority();
      break;
    }
    case 1: {
      auto r = ErrorRule::Parse(in);
      if (r.ok()) {
        auto back = ErrorRule::Parse(r->ToString());
        check(back.ok() && back->ToString() == r->ToString());
      }
      break;
    }
    case 2:
      (void)parse_size(in);
      break;
    case 3:
      (void)parse_duration_ns(in);
      break;
    case 4: {
      auto u = Uuid::Parse(in);
      if (u.ok()) check(Uuid::Parse(u->ToString()).ok() && *Uuid::Parse(u->ToString()) == *u);
      break;
    }
    case 5: {
      // The first byte after the selector: how many blocks were asked for (1..256).
      if (in.empty()) break;
      const uint64_t asked = uint64_t(uint8_t(in[0])) + 1;
      auto r = nvmf::vendor::decode_block_status(reinterpret_cast<const uint8_t*>(in.data()) + 1, in.size() - 1, asked);
      if (!r.ok()) {
        check(r.code() == Errc::kInval);
        break;
      }
      check(r->blocks >= 1 && r->blocks <= asked);
      auto back = nvmf::vendor::encode(*r);
      auto again = nvmf::vendor::decode_block_status(back.data(), back.size(), asked);
      check(again.ok() && again->blocks == r->blocks && again->allocated == r->allocated);
      break;
    }
    case 6: {
      // A 4 KiB metadata page (the input, zero-padded); what decodes re-encodes to the same meaning.
      uint8_t page[4096] = {};
      std::memcpy(page, in.data(), std::min<size_t>(in.size(), sizeof(page)));
      if (auto l = nexus::ChildLabel::Decode(page, "fuzz"); l.ok()) {
        uint8_t back[4096];
        l->Encode(back);
        auto again = nexus::ChildLabel::Decode(back, "fuzz");
        check(again.ok() && again->generation == l->generation && again->in_sync == l->in_sync);
      }
      if (auto c = nexus::RebuildCheckpoint::Decode(page); c.ok()) check(c->done_bytes <= c->volume_bytes);
      if (auto t = nexus::AlTransaction::Decode(page); t.ok()) {
        check(t->extents.size() <= nexus::kAlMaxExtents);
        uint8_t back[4096];
        t->Encode(back);
        auto again = nexus::AlTransaction::Decode(back);
        check(again.ok() && again->extents == t->extents && again->sequence == t->sequence);
      }
      if (auto st = nexus::SlotTable::Decode(page); st.ok()) {
        uint8_t back[4096];
        st->Encode(back);
        auto again = nexus::SlotTable::Decode(back);
        check(again.ok() && again->entries == st->entries);
      }
      break;
    }
    case 7: {
      // A spec as etcd might hold it: what parses re-encodes to a document that parses to the same.
      auto round = [](auto parsed) {
        if (!parsed.ok()) return;
        std::string once = parsed->ToJson();
        auto again = std::decay_t<decltype(*parsed)>::FromJson(once);
        check(again.ok() && again->ToJson() == once);
      };
      round(control::NodeSpec::FromJson(in));
      round(control::PoolSpec::FromJson(in));
      round(control::ReplicaSpec::FromJson(in));
      round(control::VolumeSpec::FromJson(in));
      round(control::SnapshotSpec::FromJson(in));
      break;
    }
  }
  return 0;
}
