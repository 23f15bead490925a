"""`dit-cache search` on the random-tiny pipeline of every family: plumbing, prefix sharing and exact MACs.

For each family (PixArt, FLUX, SD3, Wan2.1, DiT) one search of `--generations` generations runs on its
random-weight tiny pipeline with `--late-bias 6 --cx-points 2`; recorded: evaluations, block evaluations
run vs naive (prefix-sharing saving), wall time, the front, and whether every front file reproduces the MACs
the search reported when installed with `dc.accelerate(pipe, file)` on a real `pipe(...)` call. The weights
are random, so quality numbers exercise the plumbing only. Run alone (wall times), pinned to one core:

    taskset -c 0 python benchmarks/search_families.py [--generations 6] [--out benchmarks/results/search_families.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import dit_cache as dc
from search.loops import make_loop
from search.nsga import Search, SearchConfig

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("pixart", "flux", "sd3", "wan", "dit")


def front_macs_reproduced(model: dc.resolve.LoadedModel, run: Path, summary: dict, steps: int) -> bool:
    """Every front file, installed by `dc.accelerate` on `pipe(...)`, executes the MACs the search reported."""
    loop = make_loop(model.pipe, ["a red circle", "two blue squares"], [11, 12], steps, model.call_defaults)
    for r in summary["front"]:
        macs = json.loads((run / r["file"]).read_text())["metadata"]["macs"]
        with dc.accelerate(model.pipe, str(run / r["file"])) as h:
            loop.pipe_output()
            if h.stats.macs()["executed"] != 2 * macs:
                return False
    return True


def run_family(family: str, args: argparse.Namespace, root: Path) -> dict:
    """One search on random-tiny:<family>; its counts, wall time, front and the MACs check."""
    model = dc.load_pipeline(f"random-tiny:{family}")
    cfg = SearchConfig(model=model.name, prompts=args.prompts, num_prompts=args.num_prompts,
                       population=args.population, generations=args.generations, steps=args.steps, seed=0,
                       batch_size=args.num_prompts, late_bias=6.0, cx_points=2)
    t0 = time.perf_counter()
    s = Search(cfg, root / family, pipe=model.pipe)
    try:
        summary = s.run(progress=False)
    finally:
        s.close()
    wall = time.perf_counter() - t0
    space = dc.space_of(model.pipe.transformer)
    return {
        "family": family, "model": model.name, "pipeline": type(model.pipe).__name__,
        "blocks": len(space.block_ids), "components": list(space.components),
        "transformer_calls_per_step": s.pool.counts.blocks_per_step // len(space.block_ids),
        **{k: summary[k] for k in ("evaluations", "cache_hits", "block_evals", "block_evals_naive")},
        "prefix_sharing_saving": round(summary["prefix_sharing_saving"], 3), "wall_s": round(wall, 1),
        "front": [{"macs_speedup": round(r["macs_speedup"], 3), "quality": r["quality"]} for r in summary["front"]],
        "front_macs_reproduced": front_macs_reproduced(model, root / family, summary, args.steps),
    }


def table(rows: list[dict]) -> str:
    """Markdown table of the runs (rendered into docs/search.md)."""
    lines = ["| family | pipeline | blocks | calls / step | evaluations | block evals (shared) | block evals (naive) "
             "| prefix-sharing saving | front size | best MACs speedup | front MACs reproduced | wall |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['family']} | `{r['pipeline']}` | {r['blocks']} | {r['transformer_calls_per_step']} | "
                     f"{r['evaluations']} | {r['block_evals']:,} | {r['block_evals_naive']:,} | "
                     f"{r['prefix_sharing_saving']:.2f}× | {len(r['front'])} | "
                     f"{max(f['macs_speedup'] for f in r['front']):.2f}× | "
                     f"{'yes' if r['front_macs_reproduced'] else 'NO'} | {r['wall_s']:.0f} s |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--num-prompts", type=int, default=8)
    p.add_argument("--prompts", default=str(ROOT / "calib_prompts/general_100.txt"))
    p.add_argument("--families", nargs="*", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/search_families.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fam in args.families:
            rows.append(run_family(fam, args, Path(tmp)))
            print(f"{fam}: {rows[-1]['prefix_sharing_saving']:.2f}x saving, {rows[-1]['wall_s']} s", flush=True)
    res = {"settings": {k: getattr(args, k) for k in ("generations", "population", "steps", "num_prompts")}
           | {"prompts": Path(args.prompts).name, "late_bias": 6, "cx_points": 2, "seed": 0, "threads": 1},
           "rows": rows, "table_md": table(rows)}
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(res["table_md"])


if __name__ == "__main__":
    main()
