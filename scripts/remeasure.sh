#!/usr/bin/env bash
# Re-measure everything that depends on an embedded model's weights, after retraining it.
#
#   bash scripts/remeasure.sh [STAGE ...]                  # tiny-pixart-shapes (MODEL=tiny, the default)
#   MODEL=tiny-flux bash scripts/remeasure.sh [STAGE ...]  # tiny-flux-shapes
#   MODEL=all bash scripts/remeasure.sh [STAGE ...]        # both, one after the other
#
# Stages (default: all, in this order; each writes the files named, SUFFIX is "" for tiny, "_tiny_flux" for
# tiny-flux; the docs quoting them must be updated by hand afterwards):
#   model     held-out evaluation (dit_cache/zoo/<model>/evaluation.json) + docs/<model>-grid.png
#   demo      `dit-cache demo` -> benchmarks/results/demo$SUFFIX.json                      (timing: runs alone)
#   backends  benchmarks/backends.py -> benchmarks/results/backends$SUFFIX.json            (timing: runs alone)
#   eval      `dit-cache eval` report -> docs/eval_report_tiny$SUFFIX/                     (timing: runs alone)
#   search    `dit-cache search` -> $RUN (resumes a killed run; $OBJECTIVE, default psnr)   (both cores)
#   validate  search.validate on held-out prompts -> benchmarks/results/search_validation_shapes$SUFFIX.json
#   tail      benchmarks/fidelity_tail.py -> benchmarks/results/fidelity_tail.json (tiny only)
# The learned schedules shipped in dit_cache/zoo/schedules/<model>/ come from the search front: pick them after
# `validate` (see docs/search.md) and re-run `demo` and `eval`, which include them.
# Timing stages run one at a time, pinned to one core with one torch thread (never two timing jobs at once).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
MODEL=${MODEL:-tiny}
if [ "$MODEL" = all ]; then
  MODEL=tiny bash "$0" "$@"
  exec env MODEL=tiny-flux bash "$0" "$@"
fi
case $MODEL in
  tiny) ZOO=tiny-pixart-shapes; SUFFIX=""; GRID=docs/tiny-pixart-shapes-grid.png ;;
  tiny-flux) ZOO=tiny-flux-shapes; SUFFIX="_tiny_flux"; GRID=docs/tiny-flux-shapes-grid.png ;;
  *) echo "MODEL must be tiny, tiny-flux or all (got '$MODEL')" >&2; exit 2 ;;
esac
RUN=${RUN:-runs/shapes-search$SUFFIX}
OBJECTIVE=${OBJECTIVE:-psnr}   # search objective (psnr | image-psnr | ...)
RES=benchmarks/results
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(model demo backends eval search validate tail)
mkdir -p runs/logs
for s in "${STAGES[@]}"; do
  echo "== $MODEL: $s ($(date -u +%H:%M:%S))"
  case $s in
    model)
      $PY -m training.train evaluate --model "dit_cache/zoo/$ZOO" --num-prompts 256 --two-objects 128 \
        --json "dit_cache/zoo/$ZOO/evaluation.json"
      $PY -m training.train grid --model "dit_cache/zoo/$ZOO" --grid-path "$GRID" ;;
    demo)
      taskset -c 1 .venv/bin/dit-cache demo --model "$MODEL" --out "demo_out$SUFFIX"
      cp "demo_out$SUFFIX/report.json" "$RES/demo$SUFFIX.json" ;;
    backends)
      taskset -c 1 $PY benchmarks/backends.py --model "$MODEL" --threads 1 --out "$RES/backends$SUFFIX.json" \
        --plot "docs/backends_pareto$SUFFIX.png" ;;
    eval)
      rm -rf "docs/eval_report_tiny$SUFFIX"
      taskset -c 1 .venv/bin/dit-cache eval --model "$MODEL" --schedules fora:2 fora:3 fora:4 \
        $(ls dit_cache/zoo/schedules/$ZOO/*.json 2>/dev/null) --num-prompts 48 --threads 1 \
        --out "docs/eval_report_tiny$SUFFIX"
      rm -rf "docs/eval_report_tiny$SUFFIX/samples" ;;
    search)
      resume=(); [ -f "$RUN/checkpoint.json" ] && resume=(--resume)
      .venv/bin/dit-cache search --model "$MODEL" --prompts calib_prompts/shapes_calib.txt --num-prompts 24 \
        --batch-size 24 --population 48 --generations 24 --objective "$OBJECTIVE" --late-bias 6 --cx-points 2 \
        --workers 2 --memory-budget-mb 4096 --spill-mb 8192 --out "$RUN" "${resume[@]}"
      cp "$RUN/history.json" "$RES/search_shapes_history$SUFFIX.json" ;;
    validate)
      $PY -m search.validate --run "$RUN" --model "$MODEL" --num-prompts 96 --front-max 24
      cp "$RUN/validation/validation.json" "$RES/search_validation_shapes$SUFFIX.json"
      cp "$RUN/validation/validation.md" "docs/search_validation_shapes$SUFFIX.md"
      cp "$RUN/validation/validation.png" "docs/search_validation_shapes$SUFFIX.png"
      cp "$RUN/front.png" "docs/search_front_shapes$SUFFIX.png" ;;
    tail)
      if [ "$MODEL" = tiny ]; then $PY benchmarks/fidelity_tail.py; else echo "tail: tiny only, skipped"; fi ;;
    *) echo "unknown stage '$s' (model demo backends eval search validate tail)" >&2; exit 2 ;;
  esac
done
