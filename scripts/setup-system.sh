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
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { echo "[setup] debian packages: all present"; exit 0; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo; else
    echo "[setup] not root: please install these Debian packages: ${missing[*]}" >&2; exit 0; fi
fi
echo "[setup] installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
