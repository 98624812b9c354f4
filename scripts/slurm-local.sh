#!/usr/bin/env bash
# A one-node SLURM on this machine (munge, slurmctld, slurmd, a fake GPU GRES), for development and
# the test suite. Debian 12 as root, no systemd.  usage: scripts/slurm-local.sh start|stop|status
# Writes /etc/slurm/slurm.conf and gres.conf only when they are missing or were written by this script.
set -euo pipefail
MARK="# managed by ai-how scripts/slurm-local.sh"
GPUS=${SLURM_LOCAL_GPUS:-1}
conf=/etc/slurm/slurm.conf

wait_for() { local what=$1 t=$2; shift 2; local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -ge "$end" ] && { echo "[slurm-local] timeout waiting for $what" >&2; return 1; }
    sleep 0.2
  done; }

stop() {
  for f in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
    if [ -f "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; fi
  done
  for i in $(seq 50); do pgrep -x 'slurmd|slurmctld' >/dev/null || break; sleep 0.1; done
  rm -f /run/slurmd.pid /run/slurmctld.pid
}

start() {
  command -v slurmctld >/dev/null || { echo "[slurm-local] slurm-wlm is not installed: run make setup as root" >&2; exit 1; }
  [ "$(id -u)" -eq 0 ] || { echo "[slurm-local] must run as root" >&2; exit 1; }
  if [ -f "$conf" ] && ! grep -q "$MARK" "$conf"; then
    echo "[slurm-local] $conf exists and was not written by ai-how; leaving it alone" >&2
  else
    mem=$(( $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) - 1024 ))
    cat > "$conf" <<CONF
$MARK
ClusterName=aihow
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=3600
KillWait=5
GresTypes=gpu
NodeName=localhost CPUs=$(nproc) RealMemory=$mem Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    : > /etc/slurm/gres.conf
    echo "$MARK" >> /etc/slurm/gres.conf
    for i in $(seq 0 $((GPUS - 1))); do echo "NodeName=localhost Name=gpu File=/dev/null" >> /etc/slurm/gres.conf; done
  fi
  [ -s /etc/munge/munge.key ] || mungekey -c
  mkdir -p /run/munge /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  chown munge:munge /run/munge; chown slurm:slurm /var/spool/slurmctld /var/log/slurm
  if ! (munge -n | unmunge) >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
    wait_for munge 20 sh -c 'munge -n | unmunge'
  fi
  pgrep -x slurmctld >/dev/null || { rm -f /run/slurmctld.pid; slurmctld; }
  pgrep -x slurmd >/dev/null || { rm -f /run/slurmd.pid; slurmd -N localhost; }
  wait_for "slurm node idle" 60 sh -c 'sinfo -h -N -o %T | grep -qE "^(idle|mixed|allocated)"'
  scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
  echo "[slurm-local] up: $(sinfo -h -N -o '%N %T %G')"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) sinfo -N ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
