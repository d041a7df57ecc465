// libFuzzer target for what the agent reads from the Kubernetes API server: watch streams (lines, then
// events) and DiskPool objects, with the status and patches the agent builds from them. The first byte
// picks the mode.
//
// Properties besides "no crash, no sanitizer report":
//   lines   the lines do not depend on how the stream is cut (whole vs. pieces sized by the second byte);
//   event   a parsed event has a type and an object;
//   object  a DiskPool that parses has a name; validate_spec answers Ok or kInval with a message; the status
//           built for it is an object whose state is one of the CRD's four; the patches are objects.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "kube/diskpool.h"

using namespace tern;
using namespace tern::kube;

static void check(bool ok) {
  if (!ok) std::abort();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 2, size - 2);
  switch (data[0] % 3) {
    case 0: {
      LineSplitter whole(256), cut(256);
      std::vector<std::string> a, b;
      Status sa = whole.feed(in, a);
      Status sb = Status::Ok();
      const size_t piece = size_t(data[1] % 16) + 1;
      for (size_t off = 0; off < in.size() && sb.ok(); off += piece) sb = cut.feed(in.substr(off, piece), b);
      check(sa.ok() == sb.ok());
      if (sa.ok()) check(a == b && whole.pending() == cut.pending());
      break;
    }
    case 1: {
      auto e = parse_watch_event(in);
      if (e.ok()) check(!e->type.empty() && e->object.is_object());
      break;
    }
    case 2: {
      auto j = nlohmann::json::parse(in, nullptr, false);
      if (j.is_discarded()) break;
      auto dp = parse_diskpool(j);
      if (!dp.ok()) {
        check(dp.code() == Errc::kInval && !dp.status().message().empty());
        break;
      }
      check(!dp->name.empty());
      Status s = validate_spec(*dp);
      check(s.ok() || (s.code() == Errc::kInval && !s.message().empty()));
      auto v = PoolView::FromJson(j.contains("status") ? j["status"] : nlohmann::json());
      nlohmann::json st = pool_status(*dp, v.ok() ? &*v : nullptr, "", s.ok() ? "" : std::string(s.message()));
      check(st.is_object());
      const std::string state = st["state"].get<std::string>();
      check(state == "Creating" || state == "Created" || state == "Deleting" || state == "Error");
      check(status_patch(dp->status, st).is_object());
      check(finalizer_patch(*dp, data[1] & 1).is_object());
      (void)dp->disk_uri();
      break;
    }
  }
  return 0;
}
