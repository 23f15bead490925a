"""ECAD semantics vs block-residual reuse (`dc.BlockReuseConfig`) of the same static schedules, embedded model.

For FORA N=2..6 and the shipped learned schedules: MACs speedup (the handle's count, equal to
`eval.flops.TransformerMacs`), image PSNR vs uncached and shapes-world adherence on held-out prompts, and eager
wall speedup over uncached — every variant interleaved and rotated per repetition, medians of within-repetition
ratios — with wall / MACs, the share of the compute saving that reaches the clock.

    taskset -c 1 python benchmarks/block_reuse.py          # results/block_reuse.json (a few minutes)
    python benchmarks/block_reuse.py --table               # the README table from it
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from backends import adherence, decode, fidelity, generate, load_model, wall_times

import dit_cache as dc
from dit_cache.zoo import ZOO_DIR

OUT = Path(__file__).parent / "results" / "block_reuse.json"
LEARNED = ZOO_DIR / "schedules" / "tiny-pixart-shapes"
BASES = ("fora:2", "fora:3", "fora:4", "fora:5", "fora:6", str(LEARNED / "learned-3.16x.json"), str(LEARNED / "learned-3.81x.json"))


def variants(space: dc.ScheduleSpace, steps: int) -> list[tuple[str, str, object]]:
    """(schedule name, semantics, what `dc.accelerate` takes) for every base schedule, both semantics."""
    out = []
    for spec in BASES:
        sched = dc.resolve_spec(spec, space, steps).value
        name = Path(spec).stem if spec.endswith(".json") else spec.replace(":", "-")
        out += [(name, "ecad", sched), (name, "block", dc.BlockReuseConfig(sched))]
    return out


def measure(pipe, base: dict, prompts: list[str], var: list, repeats: int) -> list[dict]:
    """One row per variant: MACs, fidelity, adherence, wall."""
    seeds = [0]
    ref = generate(pipe, base, prompts, seeds)
    ref_img = decode(pipe, ref["latents"])
    rows = []
    for name, sem, spec in var:
        r = generate(pipe, base, prompts, seeds, spec)
        rows.append({"schedule": name, "semantics": sem, "macs_speedup": r["macs"]["speedup"],
                     **fidelity(pipe, r["latents"], ref["latents"], ref_img),
                     "all_correct": adherence(pipe, r["latents"], prompts, seeds)["all_correct"],
                     "peak_cache_bytes": r["peak_cache_bytes"]})
        print(f"{name:14s} {sem:5s} MACs x{rows[-1]['macs_speedup']:.2f} PSNR {rows[-1]['psnr']:.2f}", flush=True)
    times = wall_times(pipe, base, [None] + [v[2] for v in var], repeats)
    for row, ts in zip(rows, times[1:]):
        row["wall_median_s"] = statistics.median(ts)
        row["wall_speedup"] = statistics.median(a / b for a, b in zip(times[0], ts))
        row["wall_over_macs"] = row["wall_speedup"] / row["macs_speedup"]
    unc = {"schedule": "uncached", "semantics": "-", "wall_median_s": statistics.median(times[0]),
           "all_correct": adherence(pipe, ref["latents"], prompts, seeds)["all_correct"]}
    return [unc, *rows]


def table(rows: list[dict]) -> str:
    """The README table (markdown): per schedule, ECAD semantics then block reuse."""
    lines = ["| schedule | reuse | MACs× | wall× | wall / MACs | PSNR (dB) | all-correct | cache (KiB) |", "|" + "---|" * 8]
    for r in rows[1:]:
        lines.append(f"| {r['schedule']} | {'block residual' if r['semantics'] == 'block' else 'components (ECAD)'} | "
                     f"{r['macs_speedup']:.2f} | {r['wall_speedup']:.2f} | {r['wall_over_macs']:.2f} | {r['psnr']:.2f} | "
                     f"{r['all_correct']:.3f} | {r['peak_cache_bytes'] / 1024:.0f} |")
    lines.append(f"\nUncached: {rows[0]['wall_median_s']:.3f} s per generation, all-correct {rows[0]['all_correct']:.3f}.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--prompts", type=int, default=32, help="held-out prompts of the shapes world")
    ap.add_argument("--repeats", type=int, default=7, help="timing repetitions (interleaved, rotated)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--table", action="store_true", help="print the README table from --out and exit")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text())["rows"]))
        return
    torch.set_num_threads(1)
    start = time.perf_counter()
    pipe, model, base, embedded = load_model(args.steps)
    if not embedded:
        raise SystemExit("block_reuse.py needs the embedded model (dit_cache/zoo); it was not found")
    from search.validate import heldout_prompts

    prompts = heldout_prompts(args.prompts)
    rows = measure(pipe, base, prompts, variants(dc.space_of(pipe.transformer), args.steps), args.repeats)
    report = {"model": model, "steps": args.steps, "prompts": len(prompts), "split": "heldout", "threads": 1,
              "timing_repeats": args.repeats, "device": platform.processor() or platform.machine(),
              "torch": torch.__version__, "rows": rows, "wall_s": time.perf_counter() - start}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(table(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
