#include "bdev/wrapper_io.h"

#include "common/log.h"
#include "reactor/reactor_set.h"

namespace tern {

Result<std::unique_ptr<BdevDesc>> open_wrapper_base(BdevRegistry& reg, const Uri& uri, const std::string& name,
                                                    const std::string& base) {
  if (base.empty()) {
    return Status::Errorf(Errc::kInval, "invalid URI '{}': the base device is required ('?base=<device name>')",
                          uri.text);
  }
  if (base == name) return Status::Errorf(Errc::kInval, "invalid URI '{}': a device cannot wrap itself", uri.text);
  TERN_RETURN_IF_ERROR(reg.check_new_name(name));
  BdevRegistry* r = &reg;
  auto desc = reg.open(base, true, [r, name](BdevEvent ev) {
    if (ev != BdevEvent::kRemove) return;
    TLOG_INFO("bdev", "base of '{}' is being removed; removing '{}' too", name, name);
    r->tasks().spawn([](BdevRegistry* reg2, std::string n) -> Task<void> {
      Status st = co_await reg2->destroy(n, true);
      if (!st.ok()) TLOG_WARN("bdev", "removing '{}' after its base went away: {}", n, st);
    }(r, name));
  });
  if (!desc.ok()) return desc.status().WithContext(fmt::format("device '{}'", name));
  return desc;
}

BdevProps wrapper_props(const Bdev& base, std::string name, Uuid uuid, std::string product) {
  BdevProps p = base.props();
  p.name = std::move(name);
  p.uuid = uuid;
  p.product = std::move(product);
  return p;
}

}  // namespace tern
