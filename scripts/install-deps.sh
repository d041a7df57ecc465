#!/usr/bin/env bash
# Installs everything needed to build, run and test tern on Debian 12. Idempotent: packages already
# present are not touched, and apt is not even consulted when nothing is missing.
set -euo pipefail

packages=(
  # build
  build-essential cmake ninja-build ccache pkg-config git
  # libraries
  liburing-dev libisal-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev libyaml-cpp-dev
  libssl-dev libgtest-dev libgmock-dev libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  # tests and benchmarks (clang only for the libFuzzer targets)
  python3 python3-pytest python3-prometheus-client fio util-linux procps clang-14 libclang-rt-14-dev python3-grpcio python3-protobuf python3-jsonschema
  # tshark's NVMe/TCP dissector checks captured sessions
  tshark
  # NBD clients for tests/system/test_nbd.py (nbdinfo, nbdcopy and nbdfuse are in libnbd-bin; e2fsprogs for
  # the file system over NBD; nbdkit for comparing behaviour by hand)
  qemu-utils libnbd-bin nbdkit e2fsprogs
  # the Linux kernel as a peer (tests/system/kernel_guest.py): QEMU runs a Debian kernel whose guest kit
  # is built from these host packages (busybox, nvme-cli, fio, e2fsprogs, xfsprogs, nbd-client + libraries)
  qemu-system-x86 socat kmod cpio busybox-static nvme-cli xfsprogs nbd-client
  # etcd for the store's tests (tests/unit/store start their own members on free ports; the packaged
  # service, where systemd starts it, is not used)
  etcd-server etcd-client
  # the Kubernetes deployment's tests (tests/system/test_deploy.py): deploy/tools/chart-render renders the
  # Helm chart with Debian's Go and sprig (GOPATH mode, nothing downloaded); python3-yaml reads the output
  golang-go golang-github-masterminds-sprig-dev golang-github-masterminds-semver-dev golang-gopkg-yaml.v2-dev python3-yaml
  # container images (deploy/images/build.py: a debootstrapped base, buildah; tests/system/test_images.py
  # starts them with podman and runc)
  debootstrap buildah podman runc uidmap binutils
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm for deploy/tools/validate: whichever the machine has (Node >= 18), else Debian's.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -ne 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]}; run as root (or install them yourself)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm packages of the manifest validator (kubernetes-models ...), exactly as locked, into
# deploy/tools/validate/node_modules; again only when the lock file changed.
validate_dir="$(cd "$(dirname "$0")/.." && pwd)/deploy/tools/validate"
stamp="$validate_dir/node_modules/.tern-lock.sha256"
want="$(sha256sum "$validate_dir/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "install-deps: npm ci in deploy/tools/validate"
  (cd "$validate_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$want" > "$stamp"
fi
