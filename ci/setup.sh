#!/usr/bin/env bash
# Installs the system packages the package links against (and python3 for the
# CI gate, ci/gate.py, which uses only its standard library). Idempotent: a
# package already installed is left alone, and apt-get runs only when
# something is missing.
set -euo pipefail
pkgs=(libopenblas-dev libhdf5-dev zlib1g-dev libgoogle-perftools-dev google-perftools pkg-config python3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "ci/setup.sh: all system packages present (${pkgs[*]})"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "ci/setup.sh: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
