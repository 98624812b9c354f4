#!/usr/bin/env bash
# Debian packages the project and its tests need. Idempotent: when every package
# is already installed it returns without touching apt.  Needs root (or sudo);
# without either it only reports what is missing.
set -euo pipefail
PKGS=(
  build-essential pkg-config curl ca-certificates
  libvirt-dev libvirt-clients           # libvirt-python build + test:///default driver
  postgresql                            # MLflow backend store (tests start the real server)
  slurm-wlm munge                       # HPC executor (tests start munged, slurmctld, slurmd)
  openssh-server openssh-client rsync   # SSH transport to a login node (tests start their own sshd)
  prometheus                            # monitoring tests
  prometheus-alertmanager prometheus-node-exporter  # `amtool check-config`, the embedded stack's exporters
  mmdebstrap qemu-utils fdisk e2fsprogs # VM base images (`ai-how image build`: loop device + mmdebstrap)
  genisoimage cloud-init packer         # cloud-init seeds, `cloud-init schema`, `packer validate`
  libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86   # VMs (the boot test starts libvirtd)
  dnsmasq-base iptables                 # libvirt NAT networks with static DHCP leases
  iproute2                              # `ss`: which processes listen on a port (serving tests)
  podman buildah runc containernetworking-plugins  # `ai-how image server` (runc: crun fails on cgroup-hybrid hosts)
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# libvirt's QEMU driver refuses to start without the account Debian's libvirt-daemon-system would
# create (that package pulls systemd in, so it is not installed here).
ensure_qemu_account() {
  [ "$(id -u)" -eq 0 ] || return 0
  getent group kvm >/dev/null || groupadd -r kvm
  getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
  id libvirt-qemu >/dev/null 2>&1 ||
    useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
}
[ ${#missing[@]} -eq 0 ] && { ensure_qemu_account; echo "[setup] debian packages: all present"; exit 0; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo; else
    echo "[setup] not root: please install these Debian packages: ${missing[*]}" >&2; exit 0; fi
fi
echo "[setup] installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
ensure_qemu_account
