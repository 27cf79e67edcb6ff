#!/usr/bin/env bash
# Creates .venv-nnunet in the repository root with nnU-Net v2, the peer that
# benchmarks/train_seg_bench.py trains beside `medfm train seg`. It is its own environment:
# nnunetv2's requirements would move packages that .venv pins (timm among them).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
[ -x .venv-nnunet/bin/python ] || "$python" -m venv .venv-nnunet

# pip's output without the line this machine's local package folders print for every
# package they do not hold; pip's own exit status is kept, so a failed install stops setup.
log=$(mktemp)
status=0
.venv-nnunet/bin/python -m pip install --quiet --disable-pip-version-check \
    nnunetv2==2.8.1 torch==2.14.1 torchvision==0.29.1 >"$log" 2>&1 || status=$?
grep -v "is ignored" "$log" || true
rm -f "$log"
[ "$status" = 0 ] || exit "$status"
.venv-nnunet/bin/python -c "import nnunetv2, torch" >/dev/null
