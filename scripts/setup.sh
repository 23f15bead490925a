#!/usr/bin/env bash
# Create .venv and install everything dit-cache needs (idempotent: a second run reuses .venv).
# torch==2.14.1 and torchvision==0.29.1 go first (they lie on this machine's disk); then the project.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.dit-cache-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing torch==2.14.1 torchvision==0.29.1, then dit-cache[search,eval,dev] (a few minutes the first time)"
  .venv/bin/python -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "is ignored: it is neither" || true
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[search,eval,dev]" 2>&1 | grep -v "is ignored: it is neither" || true
  .venv/bin/python -c "import torch, diffusers, transformers, deap, torchmetrics, open_clip, dit_cache" \
    || { echo "setup: the installed environment is incomplete" >&2; exit 1; }
  echo "$want" > "$stamp"
else
  echo "setup: .venv is up to date"
fi
