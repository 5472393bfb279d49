#!/usr/bin/env bash
# Install a single-node SLURM (slurm-wlm + munge) for tests/test_slurm_harness.py.
# Idempotent: does nothing when slurmctld is already on PATH. Debian/Ubuntu, needs root (or sudo).
# apt cannot start services on CI runners/containers; tests/slurm_cluster.py starts the daemons.
set -euo pipefail

if command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 \
        && command -v munged >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null

for bin in slurmctld slurmd munged sbatch squeue sinfo scontrol; do
    command -v "$bin" >/dev/null 2>&1 || { echo "install-slurm: $bin missing after install" >&2; exit 1; }
done
