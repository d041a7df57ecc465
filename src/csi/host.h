// What the node plugin does to its host: run a tool (nvme-cli, blkid, mkfs, resize2fs, xfs_growfs,
// mount), read the mount table, and find NVMe namespaces, controllers and subsystems in sysfs. Parsing
// is pure and unit-tested; the rest are thin calls. Threads: any (no state; each call stands alone).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace tern::csi {

struct CommandResult {
  int exit_code = 0;   // -1: killed (timed out)
  std::string output;  // stdout and stderr, interleaved
};
// Runs argv[0] (looked up in PATH) with a time limit; an error only when it could not be started.
Result<CommandResult> run_command(const std::vector<std::string>& argv, int timeout_s);
// The same, as an error naming the command and its output when it did not exit 0.
Status run_ok(const std::vector<std::string>& argv, int timeout_s);

struct MountEntry {
  unsigned major = 0, minor = 0;  // the mounted device (st_rdev of a block device: what bind mounts share)
  std::string root;               // the mount's root within its file system ("/" unless a bind of a subtree)
  std::string target;             // where it is mounted
  std::string fs_type, source, options;
};
// /proc/self/mountinfo's lines (octal escapes such as \040 decoded); malformed lines are skipped.
std::vector<MountEntry> parse_mountinfo(const std::string& text);
std::vector<MountEntry> read_mounts();
// The mount at `path` exactly (the last one, when mounts are stacked).
std::optional<MountEntry> mount_at(const std::vector<MountEntry>& mounts, const std::string& path);

// An NVMe/TCP address from a target's URI "nvmf://host:port/nqn".
struct NvmfAddress {
  std::string host, port, nqn;
};
Result<NvmfAddress> parse_nvmf_uri(const std::string& uri);

// sysfs, under `root` (tests use a fake tree; the plugin "/sys").
struct NvmeController {
  std::string name;  // "nvme3"
  std::string subsysnqn, transport, address, state;  // address: "traddr=10.0.0.5,trsvcid=8420,..."
};
std::vector<NvmeController> nvme_controllers(const std::string& sys_root = "/sys");
// The block device (e.g. "nvme2n1") whose namespace has this NGUID (canonical UUID form, any case).
std::optional<std::string> namespace_by_nguid(const std::string& nguid, const std::string& sys_root = "/sys");
// The subsystem NQN a namespace's block device belongs to.
std::optional<std::string> subsystem_of(const std::string& block_dev, const std::string& sys_root = "/sys");
// "traddr=...,trsvcid=..." contains this host and port.
bool address_matches(const std::string& address, const std::string& host, const std::string& port);

// A block device's size in bytes (BLKGETSIZE64).
Result<uint64_t> block_size_bytes(const std::string& dev_path);
// What blkid finds on a device, probing it directly (not its cache): a file system or other signature
// ("ext4", "xfs", "LVM2_member", ...) and a partition table ("gpt", "dos"). Both empty: a blank device.
struct Signature {
  std::string type, pttype;
};
Result<Signature> probe_signature(const std::string& dev_path);
// `blkid -o export` output: KEY=VALUE lines.
Signature parse_blkid_export(const std::string& text);

// One controller's attributes read again (a controller's number is reused once it is gone).
std::optional<NvmeController> read_controller(const std::string& name, const std::string& sys_root = "/sys");
// The kernel's native NVMe multipath is on (nvme_core.multipath=Y): one device per namespace across paths.
bool native_multipath(const std::string& sys_root = "/sys");

// The host's NVMe qualified name (/etc/nvme/hostnqn, nvme-cli's).
Result<std::string> read_host_nqn(const std::string& path = "/etc/nvme/hostnqn");

}  // namespace tern::csi
