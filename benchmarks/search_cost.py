"""Search cost: hypervolume of the learned front against cumulative transformer block evaluations, per variant.

Every variant runs the same NSGA-II (same seeds, prompts, population) and differs only in how it spends block
evaluations. The hypervolume of each generation's archive front is recomputed with one fixed reference point for
every run, (MACs fraction 1.0, quality loss --hv-quality), e.g. 75 dB of PSNR deficit = images below 25 dB count
for nothing. A long reference run (defaults, --ref-generations) defines the target: --target × its final value.
Cost to target = cumulative block evaluations at the first generation whose hypervolume reaches it.

Variants (`VARIANTS`): naive NSGA-II (no prefix sharing, no fitness cache), today's defaults, each lever alone
and combinations. Naive is *recounted* from the defaults' run: prefix sharing and the fitness cache are exact, so
naive NSGA-II walks the same trajectory and spends `block_evals_naive` + cache hits × steps × blocks per step;
`--verify-naive G` runs it for G generations on the first seed and checks both claims.

    python benchmarks/search_cost.py --model tiny            # results/search_cost.json, docs/search_cost.png
    python benchmarks/search_cost.py --table                 # the docs/search.md table from the JSON

Runs live in --runs/<model>/<variant>-s<seed> and resume when killed (or when --generations grows).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "search_cost.json"
PLOT = ROOT / "docs" / "search_cost.png"
VARIANTS: dict[str, dict[str, Any]] = {  # SearchConfig overrides over the base settings
    "defaults": {},
    "late-bias": {"late_bias": 6.0, "cx_points": 2},
    "screen": {"screen_keep": 0.5},
    "surrogate": {"screen_keep": 0.5, "screen_generations": 8},
    "multi-fidelity": {"multi_fidelity": True},
    "screen+late-bias": {"screen_keep": 0.5, "late_bias": 6.0, "cx_points": 2},
    "combo": {"screen_keep": 0.5, "late_bias": 6.0, "cx_points": 2, "multi_fidelity": True},
}


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    from dit_cache.resolve import MODEL_HELP

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help=MODEL_HELP)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--generations", type=int, default=12,
                   help="per run (screening variants: generations / --screen-keep, about as many evaluations)")
    p.add_argument("--ref-generations", type=int, default=24, help="the reference run (defaults, first seed)")
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--num-prompts", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4, help="prompts per batch (multi-fidelity: the subset)")
    p.add_argument("--objective", default="image-psnr")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-budget-mb", type=int, default=1024, help="prefix-state cache per worker")
    p.add_argument("--hv-quality", type=float, default=75.0, help="quality-loss coordinate of the reference point")
    p.add_argument("--target", type=float, default=0.995, help="fraction of the reference run's final hypervolume")
    p.add_argument("--verify-naive", type=int, default=3, metavar="G", help="run naive for G generations (0: skip)")
    p.add_argument("--runs", default=str(ROOT / "runs" / "search_cost"))
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--plot", default=str(PLOT))
    p.add_argument("--table", action="store_true", help="print the docs table from --out and exit")
    p.add_argument("--mf-protocol", action="store_true",
                   help="print docs/search.md's multi-fidelity-at-the-validated-protocol comparison and exit")
    return p.parse_args(argv)


def _config(args: argparse.Namespace, seed: int, generations: int, **over: Any) -> Any:
    from search.config import SearchConfig

    base = {"model": args.model, "prompts": str(ROOT / "calib_prompts" / "shapes_calib.txt"), "num_prompts": args.num_prompts,
            "population": args.population, "generations": generations, "objective": args.objective,
            "seed": seed, "steps": args.steps, "workers": args.workers, "batch_size": args.batch_size, "memory_budget_mb": args.memory_budget_mb}
    return SearchConfig(**{**base, **over})


def run_search(cfg: Any, out: Path) -> list[dict[str, Any]]:
    """History rows of the run in `out` (resumed or extended when it exists, run when it does not)."""
    from search.nsga import Search

    hist = out / "history.json"
    if hist.is_file():
        done = json.loads(hist.read_text())
        diff = cfg.changed_from(done["config"])
        if diff:
            raise SystemExit(f"{out} holds a run with other settings {diff}: delete it or pass another --runs")
        if done["generations"] >= cfg.generations:
            return done["history"][: cfg.generations + 1]
    s = Search(cfg, out)
    try:
        s.run(resume=(out / "checkpoint.json").is_file(), progress=True)
    finally:
        s.close()
    return json.loads(hist.read_text())["history"]


def curve(rows: list[dict[str, Any]], ref: tuple[float, float], steps: int, naive: bool = False) -> list[list[float]]:
    """[(cumulative block evaluations, hypervolume)] per generation (naive: recounted, see the docstring)."""
    from search.pareto import hypervolume

    out = []
    for r in rows:
        bps = r["block_evals_naive"] / r["steps_naive"] if r["steps_naive"] else 0
        cost = r["block_evals_naive"] + r["cache_hits"] * steps * bps if naive else r["block_evals"]
        out.append([float(cost), hypervolume([tuple(p) for p in r["front"]], ref)])
    return out


def cost_to(points: list[list[float]], target: float) -> float | None:
    """Block evaluations at the first generation reaching `target` (None: never)."""
    return next((c for c, hv in points if hv >= target), None)


def verify_naive(args: argparse.Namespace, rows: list[dict[str, Any]], runs: Path) -> dict[str, Any]:
    """Naive NSGA-II (no prefix sharing) for a few generations: same hypervolumes, block evals = the recount."""
    cfg = _config(args, args.seeds[0], args.verify_naive, prefix_sharing=False)
    naive = run_search(cfg, runs / f"naive-s{args.seeds[0]}")
    same_front = all(a["front"] == b["front"] for a, b in zip(naive, rows))
    same_cost = all(a["block_evals"] == b["block_evals_naive"] for a, b in zip(naive, rows))
    if not (same_front and same_cost):
        raise SystemExit(f"naive NSGA-II differs from the recount (fronts equal: {same_front}, "
                         f"block evals equal: {same_cost}): the recount is invalid")
    return {"generations": args.verify_naive, "fronts_equal": same_front, "block_evals_equal_recount": same_cost}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every variant × seed, the reference run and the naive check."""
    runs = Path(args.runs) / args.model.replace(":", "_")
    ref_pt = (1.0, args.hv_quality)
    reference = run_search(_config(args, args.seeds[0], args.ref_generations), runs / f"defaults-s{args.seeds[0]}")
    steps = args.steps
    target = args.target * curve(reference, ref_pt, steps)[-1][1]
    res: dict[str, Any] = {"runs": {}, "target_hypervolume": target}
    names = ["defaults", *(v for v in args.variants if v != "defaults")]  # naive is recounted from the defaults
    for seed in args.seeds:
        for name in names:
            over = VARIANTS[name]
            gens = math.ceil(args.generations / over.get("screen_keep", 1.0))  # about the same evaluations in all
            rows = run_search(_config(args, seed, gens, **over), runs / f"{name}-s{seed}")
            res["runs"][f"{name}-s{seed}"] = {"variant": name, "seed": seed, "curve": curve(rows, ref_pt, steps)}
            if name == "defaults":
                res["runs"][f"naive-s{seed}"] = {"variant": "naive", "seed": seed,
                                                 "curve": curve(rows, ref_pt, steps, naive=True)}
    if args.verify_naive:
        res["naive_check"] = verify_naive(args, reference, runs)
    for r in res["runs"].values():
        r["cost_to_target"] = cost_to(r["curve"], target)
    return res


def summarize(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Per variant: cost to target per seed and the factor vs naive on the same seed."""
    rows = []
    for name in ["naive", *VARIANTS]:
        runs = [r for r in res["runs"].values() if r["variant"] == name]
        if not runs:
            continue
        factors, bounds = [], []
        for r in runs:
            naive = res["runs"][f"naive-s{r['seed']}"]
            mine = r["cost_to_target"]
            spent = naive["cost_to_target"] or naive["curve"][-1][0]  # naive never reached it: a lower bound
            factors.append(spent / mine if mine else None)
            bounds.append(naive["cost_to_target"] is None and mine is not None)
        rows.append({"variant": name, "cost_to_target": [r["cost_to_target"] for r in runs], "factor_vs_naive": factors,
                     "factor_is_lower_bound": bounds, "final_hypervolume": [r["curve"][-1][1] for r in runs],
                     "min_factor": min(factors) if None not in factors else None})
    return rows


BUDGETS = (20_000, 35_000, 60_000)  # block evaluations at which the table reads each curve


def hv_at(points: list[list[float]], budget: float) -> float | None:
    """Hypervolume of the last generation within `budget` block evaluations (None: generation 0 costs more, or the
    run ended before spending the budget)."""
    within = [hv for c, hv in points if c <= budget]
    return within[-1] if within and points[-1][0] >= budget else None


def table(res: dict[str, Any]) -> str:
    """Markdown table of `summarize`, plus each run's hypervolume at fixed budgets."""
    def f(x: float | None, fmt: str) -> str:
        return "not reached" if x is None else format(x, fmt)

    budgets = " | ".join(f"hv at {b // 1000}k" for b in BUDGETS)
    lines = [f"| variant | block evals to target (per seed) | × fewer than naive (per seed) | {budgets} | final hypervolume (block evals) |",
             "|---|---|---|" + "---|" * len(BUDGETS) + "---|"]
    for r in res["summary"]:
        runs = [x for x in res["runs"].values() if x["variant"] == r["variant"]]
        at = " | ".join(" / ".join("–" if hv_at(x["curve"], b) is None else f"{hv_at(x['curve'], b):.3f}" for x in runs)
                        for b in BUDGETS)
        final = " / ".join(f"{x['curve'][-1][1]:.3f} ({x['curve'][-1][0]:,.0f})" for x in runs)
        lines.append(f"| {r['variant']} | {' / '.join(f(c, ',.0f') for c in r['cost_to_target'])} | "
                     f"{' / '.join(('≥ ' if b else '') + f(x, '.2f') for x, b in zip(r['factor_vs_naive'], r['factor_is_lower_bound']))} | "
                     f"{at} | {final} |")
    return "\n".join(lines)


def plot(res: dict[str, Any], path: Path) -> None:
    """Hypervolume against cumulative block evaluations (log x), one line per run, the target dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = {name: f"C{i}" for i, name in enumerate(["naive", *VARIANTS])}
    for r in res["runs"].values():
        xs, ys = zip(*r["curve"])
        ax.plot(xs, ys, color=colors[r["variant"]], ls="--" if r["seed"] else "-", lw=1.3,
                label=r["variant"] if r["seed"] == res["config"]["seeds"][0] else None)
    ax.axhline(res["target_hypervolume"], color="k", ls=":", lw=1, label="target")
    ax.set_xscale("log")
    ax.set_xlabel("cumulative transformer block evaluations")
    ax.set_ylabel("hypervolume (fixed reference)")
    ax.set_title(f"search cost on {res['config']['model']} (solid: seed {res['config']['seeds'][0]}, dashed: others)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def mf_protocol(results: Path = OUT.parent) -> str:
    """docs/search.md's comparison of the validated run with its multi-fidelity repeat (histories and held-out
    validations in `results`): per-sample block evaluations, wall, hypervolume, and the best held-out image PSNR at
    or above each MAC speedup."""
    names = ("search_shapes_history.json", "search_shapes_history_mf.json", "search_validation_shapes.json",
             "search_validation_shapes_mf.json")
    missing = [n for n in names if not (results / n).is_file()]
    if missing:
        raise SystemExit(f"--mf-protocol needs {', '.join(missing)} in {results} (docs/search.md gives the runs)")
    ref_h, mf_h, ref_v, mf_v = (json.loads((results / n).read_text()) for n in names)
    a, b = (h["block_evals"] * h["config"]["batch_size"] for h in (ref_h, mf_h))  # a block evaluation is one batch call
    first, whole = mf_h["config"]["batch_size"], ref_h["config"]["batch_size"]

    def best(v: dict[str, Any], t: float) -> dict[str, Any]:
        return max((r for r in v["rows"] if r["kind"] == "front" and r["macs_speedup"] >= t), key=lambda r: r["psnr_db"])

    def cell(r: dict[str, Any]) -> str:
        return f"{r['psnr_db']:.2f} ({r['macs_speedup']:.2f}×, {100 * r['adherence']:.1f} %)"

    rows = [f"| {t} | {cell(best(ref_v, t))} | {cell(best(mf_v, t))} | {best(mf_v, t)['psnr_db'] - best(ref_v, t)['psnr_db']:+.2f} |"
            for t in (1.5, 2.0, 2.5, 3.0, 3.5, 4.0)]
    return (f"  - {mf_h['history'][-1]['partial']} of {mf_h['evaluations']:,} candidates stopped after the first {first} prompts. "
            f"Block\n    evaluations count transformer calls of a whole batch, so per sample: {b:,} against {a:,}\n"
            f"    ({100 * (b / a - 1):+.0f} %). Wall {mf_h['wall_s']:,.0f} s against {ref_h['wall_s']:,.0f} s (batches of {first} "
            f"use this CPU\n    less well than one of {whole}). Final hypervolume {mf_h['history'][-1]['hypervolume']:.3f} against "
            f"{ref_h['history'][-1]['hypervolume']:.3f}.\n"
            "  - Held-out (96 prompts, seeds 10000+, the same for both), the best image PSNR at or above each MAC speedup:\n\n"
            "| ≥ MACs× | today's front: PSNR dB (MACs×, adherence) | multi-fidelity front | difference (dB) |\n"
            "|---|---|---|---|\n" + "\n".join(rows))


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.table:
        print(table(json.loads(Path(args.out).read_text())))
        return
    if args.mf_protocol:
        print(mf_protocol())
        return
    res = measure(args)
    res["config"] = {k: v for k, v in vars(args).items() if k not in ("table", "mf_protocol", "runs", "out", "plot")}
    res["summary"] = summarize(res)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    plot(res, Path(args.plot))
    print(table(res))
    best = max((r for r in res["summary"] if r["min_factor"]), key=lambda r: r["min_factor"], default=None)
    if best:
        print(f"best: {best['variant']}, >= {best['min_factor']:.2f}x fewer block evaluations than naive on every seed")


if __name__ == "__main__":
    main()
