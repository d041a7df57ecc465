#include "csi/host.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace tern::csi {
namespace {

namespace fs = std::filesystem;

TEST(CsiHost, ParsesMountinfo) {
  const std::string text =
      "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n"
      "97 22 259:7 / /var/lib/kubelet/plugins/kubernetes.io/csi/io.tern.csi/abc/globalmount rw,relatime shared:40 - "
      "xfs /dev/nvme3n1 rw,attr2\n"
      "98 22 259:7 / /var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/pvc-1/mount ro,relatime shared:40 - xfs "
      "/dev/nvme3n1 rw\n"
      "99 22 0:5 /nvme3n1 /var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/publish/pvc-2/pod rw - devtmpfs udev rw\n"
      "100 22 0:50 / /mnt/with\\040space rw - tmpfs tmpfs rw\n"
      "garbage line\n"
      "101 22 0:51 / /mnt/nofields rw - tmpfs\n";
  auto m = parse_mountinfo(text);
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m[1].major, 259u);
  EXPECT_EQ(m[1].minor, 7u);
  EXPECT_EQ(m[1].fs_type, "xfs");
  EXPECT_EQ(m[1].source, "/dev/nvme3n1");
  EXPECT_EQ(m[2].options, "ro,relatime");
  EXPECT_EQ(m[3].root, "/nvme3n1");
  EXPECT_EQ(m[4].target, "/mnt/with space");
  auto at = mount_at(m, "/mnt/with space/");
  ASSERT_TRUE(at.has_value());
  EXPECT_EQ(at->fs_type, "tmpfs");
  EXPECT_FALSE(mount_at(m, "/mnt").has_value());
}

TEST(CsiHost, ParsesNvmfUris) {
  auto a = parse_nvmf_uri("nvmf://10.0.0.5:8420/nqn.2019-05.io.tern:6c1f3a52-8d0e-4b7a-9c55-0e7d2b4a9f10");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->host, "10.0.0.5");
  EXPECT_EQ(a->port, "8420");
  EXPECT_EQ(a->nqn, "nqn.2019-05.io.tern:6c1f3a52-8d0e-4b7a-9c55-0e7d2b4a9f10");
  auto v6 = parse_nvmf_uri("nvmf://[fd00::1]:4420/nqn.x:y?uuid=1");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "fd00::1");
  EXPECT_EQ(v6->nqn, "nqn.x:y");
  for (const char* bad : {"nbd://h:1/x", "nvmf://h/nqn.x", "nvmf://h:4420", "nvmf://:4420/nqn.x", "nvmf://h:4420/foo"}) {
    EXPECT_FALSE(parse_nvmf_uri(bad).ok()) << bad;
  }
}

TEST(CsiHost, ParsesBlkidExport) {
  auto fs = parse_blkid_export("DEVNAME=/dev/nvme0n1\nUUID=1234\nBLOCK_SIZE=4096\nTYPE=ext4\n");
  EXPECT_EQ(fs.type, "ext4");
  EXPECT_EQ(fs.pttype, "");
  auto pt = parse_blkid_export("DEVNAME=/dev/nvme0n1\nPTUUID=abcd\nPTTYPE=gpt\n");
  EXPECT_EQ(pt.type, "");  // a partition table alone: not blank, and not a file system
  EXPECT_EQ(pt.pttype, "gpt");
  auto none = parse_blkid_export("");
  EXPECT_TRUE(none.type.empty() && none.pttype.empty());
}

TEST(CsiHost, AddressMatching) {
  EXPECT_TRUE(address_matches("traddr=10.0.0.5,trsvcid=8420,src_addr=10.0.0.9", "10.0.0.5", "8420"));
  EXPECT_FALSE(address_matches("traddr=10.0.0.50,trsvcid=8420", "10.0.0.5", "8420"));
  EXPECT_FALSE(address_matches("traddr=10.0.0.5,trsvcid=84200", "10.0.0.5", "8420"));
}

class FakeSys : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("tern-csi-sys-" + std::to_string(getpid()));
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  void put(const std::string& rel, const std::string& text) {
    fs::path p = root_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text << "\n";
  }
  fs::path root_;
};

TEST_F(FakeSys, FindsNamespacesControllersAndSubsystems) {
  // Native multipath: the head disk's device is the subsystem; two paths (controllers) to it.
  put("block/nvme0n1/nguid", "00000000-0000-0000-0000-000000000000");
  put("block/nvme2c2n1/nguid", "6c1f3a52-8d0e-4b7a-9c55-0e7d2b4a9f10");  // a hidden path: never the device
  put("block/nvme2c3n1/nguid", "6c1f3a52-8d0e-4b7a-9c55-0e7d2b4a9f10");
  put("block/nvme2n1/nguid", "6C1F3A52-8D0E-4B7A-9C55-0E7D2B4A9F10");
  put("block/nvme2n1/device/subsysnqn", "nqn.2019-05.io.tern:vol");
  put("block/nvme5n1/wwid", "eui.b2e94d073f614c8ea1d357c0f8e6a2b4");
  put("block/sda/nguid", "b2e94d07-3f61-4c8e-a1d3-57c0f8e6a2b4");  // not nvme: never chosen
  put("class/nvme/nvme2/subsysnqn", "nqn.2019-05.io.tern:vol");
  put("class/nvme/nvme2/transport", "tcp");
  put("class/nvme/nvme2/address", "traddr=10.0.0.5,trsvcid=8420");
  put("class/nvme/nvme2/state", "live");
  put("class/nvme/nvme3/subsysnqn", "nqn.2019-05.io.tern:vol");
  put("class/nvme/nvme3/transport", "tcp");
  put("class/nvme/nvme3/address", "traddr=10.0.0.6,trsvcid=8420");
  put("class/nvme/nvme3/state", "connecting");
  EXPECT_EQ(namespace_by_nguid("6c1f3a52-8d0e-4b7a-9c55-0e7d2b4a9f10", root_), "nvme2n1");
  EXPECT_EQ(namespace_by_nguid("b2e94d07-3f61-4c8e-a1d3-57c0f8e6a2b4", root_), "nvme5n1");
  EXPECT_FALSE(namespace_by_nguid("11111111-3f61-4c8e-a1d3-57c0f8e6a2b4", root_).has_value());
  EXPECT_EQ(subsystem_of("nvme2n1", root_), "nqn.2019-05.io.tern:vol");
  EXPECT_FALSE(subsystem_of("nvme0n1", root_).has_value());
  auto c = nvme_controllers(root_);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].name, "nvme2");
  EXPECT_EQ(c[1].state, "connecting");
  EXPECT_TRUE(nvme_controllers(root_ / "nowhere").empty());
  auto again = read_controller("nvme3", root_);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->address, "traddr=10.0.0.6,trsvcid=8420");
  EXPECT_FALSE(read_controller("nvme9", root_).has_value());
  EXPECT_FALSE(native_multipath(root_));
  put("module/nvme_core/parameters/multipath", "Y");
  EXPECT_TRUE(native_multipath(root_));
}

TEST(CsiHost, RunsCommands) {
  auto r = run_command({"sh", "-c", "echo out; echo err >&2; exit 3"}, 10);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_NE(r->output.find("out"), std::string::npos);
  EXPECT_NE(r->output.find("err"), std::string::npos);
  Status s = run_ok({"sh", "-c", "echo why; exit 1"}, 10);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("why"), std::string::npos);
  auto slow = run_command({"sleep", "30"}, 1);
  ASSERT_TRUE(slow.ok());
  EXPECT_EQ(slow->exit_code, -1);
  EXPECT_FALSE(run_command({"/nonexistent/tool"}, 5).ok());
}

TEST(CsiHost, HostNqn) {
  auto p = fs::temp_directory_path() / ("tern-hostnqn-" + std::to_string(getpid()));
  std::ofstream(p) << "nqn.2014-08.org.nvmexpress:uuid:7e4d0a52-2f57-4d1c-9a51-1c0ffee00001\n";
  auto n = read_host_nqn(p);
  fs::remove(p);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, "nqn.2014-08.org.nvmexpress:uuid:7e4d0a52-2f57-4d1c-9a51-1c0ffee00001");
  EXPECT_EQ(read_host_nqn(p).status().code(), Errc::kNoEnt);
}

}  // namespace
}  // namespace tern::csi
