"""Learned at 20 steps, run at 10 / 15 / 30 / 50: a transferred front vs FORA and vs a search at that step count.

On the embedded model, one search per step count T in (10, 15, 20, 30, 50) with the same budget (calibration
prompts of `calib_prompts/shapes_calib.txt`, `--objective image-psnr --late-bias 6 --cx-points 2`). Then, on
held-out prompts with other seeds, for each T ≠ 20 and each FORA-N built natively at T (N = 2, 3, 4):

* **FORA-N** at T;
* **transferred**: the 20-step front resampled to T (`Schedule.resample`), the point with the lowest
  calibration loss among those at ≥ FORA-N's MACs speedup at T;
* **searched at T**: the T-step search's front point with the lowest calibration loss at ≥ that speedup.

Compute = MACs speedup counted by the runtime (exact); quality = image PSNR vs the uncached model at T.

    python benchmarks/transfer.py [--population 16] [--generations 8] [--out benchmarks/results/transfer.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import dit_cache as dc
from eval.fidelity import decode_latents
from search.evaluator import Evaluator
from search.nsga import Search, SearchConfig
from search.validate import generate, heldout_prompts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from resample import measure  # the same measurement as the resample table

ROOT = Path(__file__).resolve().parents[1]
STEP_COUNTS = (10, 15, 30, 50)
SOURCE_STEPS = 20


def search_front(steps: int, args: argparse.Namespace, root: Path, pipe) -> tuple[list[dc.Schedule], dict]:
    """The front of one search at `steps` (its files' metadata carry calibration loss and speedup)."""
    cfg = SearchConfig(model="tiny", prompts=str(ROOT / "calib_prompts/shapes_calib.txt"), num_prompts=args.calib,
                       population=args.population, generations=args.generations, steps=steps, seed=0,
                       batch_size=args.calib, objective="image-psnr", late_bias=6.0, cx_points=2,
                       workers=args.workers)
    t0 = time.perf_counter()
    s = Search(cfg, root / f"s{steps}", pipe=pipe)
    try:
        summary = s.run(progress=False)
    finally:
        s.close()
    info = {"steps": steps, "evaluations": summary["evaluations"], "front_size": len(summary["front"]),
            "wall_s": round(time.perf_counter() - t0, 1)}
    return [dc.Schedule.load(root / f"s{steps}" / r["file"]) for r in summary["front"]], info


def best_at(cands: list[tuple[dc.Schedule, float, float]], speed: float) -> tuple[dc.Schedule, float] | None:
    """(schedule, its speedup) with the lowest calibration loss among (schedule, speedup, loss) at >= speed."""
    ok = [c for c in cands if c[1] >= speed - 1e-9]
    if not ok:
        return None
    s, sp, _ = min(ok, key=lambda c: (c[2], -c[1]))
    return s, sp


def rows_at(pipe, steps: int, fronts: dict[int, list[dc.Schedule]], prompts, seeds) -> list[dict]:
    """FORA-N vs transferred vs searched-at-T at one step count."""
    ref_lat, _ = generate(pipe, prompts, seeds, steps)
    ref_img = decode_latents(pipe, ref_lat)
    ev = Evaluator(pipe, prompts[:1], seeds[:1], steps, prefix_sharing=False)
    try:
        full = ev.macs(dc.compute_all(ev.space, steps))

        def loss(s: dc.Schedule) -> float:
            return float(s.metadata["objectives"]["quality_loss"])

        transferred = [(s.resample(steps), full / ev.macs(s.resample(steps)), loss(s)) for s in fronts[SOURCE_STEPS]]
        native = [(s, full / ev.macs(s), loss(s)) for s in fronts[steps]]
    finally:
        ev.close()
    out = []
    for n in (2, 3, 4):
        fora = dc.fora(dc.space_of(pipe.transformer), steps, n)
        row = {"steps": steps, "fora": {"name": fora.name, **measure(pipe, prompts, seeds, steps, fora, ref_lat, ref_img)}}
        for key, cands in (("transferred", transferred), ("searched", native)):
            pick = best_at(cands, row["fora"]["macs_speedup"])
            row[key] = None if pick is None else {"name": pick[0].name,
                                                   **measure(pipe, prompts, seeds, steps, pick[0], ref_lat, ref_img)}
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def _cell(r: dict | None) -> str:
    return "–" if r is None else f"{r['macs_speedup']:.2f}, {r['psnr_db']:.2f}"


def table(rows: list[dict]) -> str:
    """Markdown table of the rows."""
    lines = ["| steps | FORA-N at T: MACs ×, PSNR dB | learned at 20, resampled to T: MACs ×, PSNR dB | "
             "searched at T: MACs ×, PSNR dB |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['steps']} | {r['fora']['name']}: {_cell(r['fora'])} | {_cell(r['transferred'])} | "
                     f"{_cell(r['searched'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--calib", type=int, default=8, help="calibration prompts per search (default 8)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--num-prompts", type=int, default=16, help="held-out prompts (default 16)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/transfer.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    pipe = dc.zoo.load()
    prompts = heldout_prompts(args.num_prompts)
    seeds = list(range(10_000, 10_000 + len(prompts)))
    fronts, searches = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for steps in (SOURCE_STEPS, *STEP_COUNTS):
            fronts[steps], info = search_front(steps, args, Path(tmp), pipe)
            searches.append(info)
            print(json.dumps(info), flush=True)
    rows = [r for steps in STEP_COUNTS for r in rows_at(pipe, steps, fronts, prompts, seeds)]
    result = {"model": "tiny", "settings": {k: getattr(args, k) for k in ("population", "generations", "calib",
                                                                           "num_prompts")},
              "searches": searches, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    Path(args.out).with_suffix(".md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
