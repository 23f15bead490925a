#!/usr/bin/env bash
# Re-measure everything that depends on the embedded model's weights, after retraining it.
#
#   bash scripts/remeasure.sh [STAGE ...]     # default: all stages, in this order
#
# Stages (each writes the files named; the docs quoting them must be updated by hand afterwards):
#   model     held-out evaluation (dit_cache/zoo/tiny-pixart-shapes/evaluation.json) + docs grid
#   demo      `dit-cache demo` -> benchmarks/results/demo.json                      (timing: runs alone)
#   backends  benchmarks/backends.py -> benchmarks/results/backends.json            (timing: runs alone)
#   eval      `dit-cache eval` report -> docs/eval_report_tiny/                     (timing: runs alone)
#   search    `dit-cache search` -> $RUN (resumes a killed run; $OBJECTIVE, default psnr)   (both cores)
#   validate  search.validate on held-out prompts -> benchmarks/results/search_validation_shapes.json
#   tail      benchmarks/fidelity_tail.py -> benchmarks/results/fidelity_tail.json
# The learned schedules shipped in dit_cache/zoo/schedules/ come from the search front: pick them after
# `validate` (see docs/search.md) and re-run `demo` and `eval`, which include them.
# Timing stages run one at a time, pinned to one core with one torch thread (never two timing jobs at once).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
RUN=${RUN:-runs/shapes-search}
OBJECTIVE=${OBJECTIVE:-psnr}   # search objective (psnr | image-psnr | ...)
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(model demo backends eval search validate tail)
mkdir -p runs/logs
for s in "${STAGES[@]}"; do
  echo "== $s ($(date -u +%H:%M:%S))"
  case $s in
    model)
      $PY -m training.train evaluate --num-prompts 256 --json dit_cache/zoo/tiny-pixart-shapes/evaluation.json
      $PY -m training.train grid ;;
    demo)
      taskset -c 1 .venv/bin/dit-cache demo
      cp demo_out/report.json benchmarks/results/demo.json ;;
    backends)
      taskset -c 1 $PY benchmarks/backends.py --threads 1 ;;
    eval)
      rm -rf docs/eval_report_tiny
      taskset -c 1 .venv/bin/dit-cache eval --model tiny --schedules fora:2 fora:3 fora:4 \
        dit_cache/zoo/schedules/tiny-pixart-shapes/*.json --num-prompts 48 --threads 1 --out docs/eval_report_tiny
      rm -rf docs/eval_report_tiny/samples ;;
    search)
      resume=(); [ -f "$RUN/checkpoint.json" ] && resume=(--resume)
      .venv/bin/dit-cache search --model tiny --prompts calib_prompts/shapes_calib.txt --num-prompts 24 \
        --batch-size 24 --population 48 --generations 24 --objective "$OBJECTIVE" --late-bias 6 --cx-points 2 \
        --workers 2 --memory-budget-mb 4096 --spill-mb 8192 --out "$RUN" "${resume[@]}"
      cp "$RUN/history.json" benchmarks/results/search_shapes_history.json ;;
    validate)
      $PY -m search.validate --run "$RUN" --model tiny --num-prompts 96 --front-max 24
      cp "$RUN/validation/validation.json" benchmarks/results/search_validation_shapes.json
      cp "$RUN/validation/validation.md" docs/search_validation_shapes.md
      cp "$RUN/validation/validation.png" docs/search_validation_shapes.png
      cp "$RUN/front.png" docs/search_front_shapes.png ;;
    tail)
      $PY benchmarks/fidelity_tail.py ;;
    *) echo "unknown stage '$s' (model demo backends eval search validate tail)" >&2; exit 2 ;;
  esac
done
