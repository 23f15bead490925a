#!/usr/bin/env bash
# Set up .venv (idempotent) and run the main job: `dit-cache demo`. Extra arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dit-cache demo "$@"
