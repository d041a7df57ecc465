#include "csi/params.h"

#include <gtest/gtest.h>

#include "csi/ids.h"

namespace tern::csi {
namespace {

TEST(CsiParams, DefaultsWhenEmpty) {
  auto p = parse_parameters({});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->replicas, 1u);
  EXPECT_FALSE(p->thin);
  EXPECT_EQ(p->fs_type, "ext4");
  EXPECT_FALSE(p->max_snapshots.has_value());
  EXPECT_EQ(p->nvme.ctrl_loss_tmo, 1800u);
}

TEST(CsiParams, EveryDocumentedKey) {
  auto p = parse_parameters({{"replicas", "3"},
                             {"thin", "true"},
                             {"protocol", "nvmf"},
                             {"csi.storage.k8s.io/fstype", "xfs"},
                             {"nodeLabels", "zone=a,tier=fast"},
                             {"poolLabels", "class=ssd"},
                             {"spread", "zone,rack"},
                             {"maxSnapshots", "10"},
                             {"rebuildRate", "200MiB"},
                             {"nvmeCtrlLossTmo", "60"},
                             {"nvmeKeepAliveTmo", "10"},
                             {"nvmeReconnectDelay", "3"},
                             {"csi.storage.k8s.io/pvc/name", "data"},
                             {"csi.storage.k8s.io/pvc/namespace", "db"},
                             {"csi.storage.k8s.io/pv/name", "pvc-1"}});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->replicas, 3u);
  EXPECT_TRUE(p->thin);
  EXPECT_EQ(p->fs_type, "xfs");
  EXPECT_EQ(p->node_labels, (StringMap{{"zone", "a"}, {"tier", "fast"}}));
  EXPECT_EQ(p->pool_labels, (StringMap{{"class", "ssd"}}));
  EXPECT_EQ(p->spread, (std::vector<std::string>{"zone", "rack"}));
  EXPECT_EQ(*p->max_snapshots, 10u);
  EXPECT_EQ(*p->rebuild_rate, 200ull << 20);
  EXPECT_EQ(p->nvme.ctrl_loss_tmo, 60u);
  EXPECT_EQ(p->nvme.keep_alive_tmo, 10u);
  EXPECT_EQ(p->nvme.reconnect_delay, 3u);
  EXPECT_EQ(p->pvc_name, "data");
  EXPECT_EQ(p->pvc_namespace, "db");
  // The node reads the tunables back from the volume context.
  auto t = nvme_tunables(volume_context(*p));
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->ctrl_loss_tmo, 60u);
  EXPECT_EQ(t->reconnect_delay, 3u);
}

TEST(CsiParams, BadValuesNameTheKey) {
  struct Case {
    StringMap in;
    const char* key;
  } cases[] = {
      {{{"replicas", "0"}}, "replicas"},
      {{{"replicas", "9"}}, "replicas"},
      {{{"replicas", "two"}}, "replicas"},
      {{{"replicas", "3 "}}, "replicas"},
      {{{"thin", "yes"}}, "thin"},
      {{{"protocol", "iscsi"}}, "protocol"},
      {{{"csi.storage.k8s.io/fstype", "btrfs"}}, "fstype"},
      {{{"nodeLabels", "zone"}}, "nodeLabels"},
      {{{"poolLabels", "=x"}}, "poolLabels"},
      {{{"spread", "zone,,rack"}}, "spread"},
      {{{"maxSnapshots", "1001"}}, "maxSnapshots"},
      {{{"rebuildRate", "fast"}}, "rebuildRate"},
      {{{"rebuildRate", "1000"}}, "rebuildRate"},  // below 1 MiB/s and not 0
      {{{"nvmeKeepAliveTmo", "0"}}, "nvmeKeepAliveTmo"},
      {{{"replica", "3"}}, "replica"},  // a typo is refused, not ignored
  };
  for (const auto& c : cases) {
    auto p = parse_parameters(c.in);
    ASSERT_FALSE(p.ok()) << c.key;
    EXPECT_EQ(p.status().code(), Errc::kInval);
    EXPECT_NE(std::string(p.status().message()).find(c.key), std::string::npos) << p.status();
  }
  // The sidecars' own keys pass.
  EXPECT_TRUE(parse_parameters({{"csi.storage.k8s.io/provisioner-secret-name", "s"}}).ok());
  EXPECT_TRUE(parse_parameters({{"rebuildRate", "0"}}).ok());
}

TEST(CsiParams, SizeForRange) {
  EXPECT_EQ(*size_for_range(0, 0, 1 << 30), 1u << 30);
  EXPECT_EQ(*size_for_range(1, 0, 1 << 30), 4096u);
  EXPECT_EQ(*size_for_range(4096, 4096, 0), 4096u);
  EXPECT_EQ(*size_for_range(10 << 20, 0, 0), 10u << 20);
  EXPECT_EQ(*size_for_range(0, 100 << 20, 1ull << 30), 100u << 20);  // the default is cut to the limit
  EXPECT_EQ(size_for_range(4097, 5000, 0).status().code(), Errc::kRange);
  EXPECT_EQ(size_for_range(0, 100, 1 << 30).status().code(), Errc::kRange);
  EXPECT_EQ(size_for_range(-1, 0, 0).status().code(), Errc::kInval);
}

TEST(CsiIds, NamesMapToStableDistinctUuids) {
  std::string a = volume_uuid_for_name("pvc-0a1b");
  EXPECT_TRUE(is_uuid(a));
  EXPECT_EQ(a, volume_uuid_for_name("pvc-0a1b"));
  EXPECT_NE(a, volume_uuid_for_name("pvc-0a1c"));
  EXPECT_NE(a, snapshot_uuid_for_name("pvc-0a1b"));  // another namespace
  // Fixed forever: a changed derivation would orphan every volume the CO knows by name.
  EXPECT_EQ(volume_uuid_for_name("pvc-1"), volume_uuid_for_name(std::string("pvc-") + "1"));
  EXPECT_FALSE(is_uuid("pvc-1"));
}

TEST(CsiIds, NodeIdRoundTrip) {
  NodeId n{"node-1", "nqn.2014-08.org.nvmexpress:uuid:7e4d0a52-2f57-4d1c-9a51-1c0ffee00001"};
  auto back = parse_node_id(format_node_id(n));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->node, n.node);
  EXPECT_EQ(back->host_nqn, n.host_nqn);
  EXPECT_FALSE(parse_node_id("node-1").has_value());
  EXPECT_FALSE(parse_node_id("/nqn.x").has_value());
  EXPECT_FALSE(parse_node_id("node-1/").has_value());
  EXPECT_FALSE(parse_node_id("node-1/not-an-nqn").has_value());
}

}  // namespace
}  // namespace tern::csi
