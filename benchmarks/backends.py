"""Every caching backend at >= 3 operating points (+ FORA N=2,3,4) on the embedded model: MACs speedup,
wall speedup (interleaved, rotated, medians), fidelity to the uncached output (PSNR, latent MSE; same
seeds), prompt adherence (embedded model only), peak extra memory; plus the ERTACache ablation.

    python benchmarks/backends.py                 # full run (lead, quiet machine): results/backends.json + docs plot
    python benchmarks/backends.py --quick         # smoke test: 2 prompts, 1 timing repeat, temp output

The operating points are `dit_cache.baselines` (shared with `search.validate`; each point is a caching spec, as
`dit-cache eval --schedules` takes it), plus FORA with forecast cells between its full steps. `--model` takes
any `--model` spec (default tiny); without one it falls back to a tiny random PixArt pipeline when the
embedded model is missing (no adherence then).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import dit_cache as dc
from dit_cache.resolve import MODEL_HELP, erta_reuse_points
from eval.fidelity import decode_latents as decode

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "backends.json"
PLOT = ROOT / "docs" / "backends_pareto.png"
FALLBACK_PROMPTS = ["a red circle in the center", "two blue squares", "a green triangle at the top left",
                    "a small yellow cross", "a large purple star at the bottom", "an orange ring on black"]


# -- model and calls ---------------------------------------------------------------------------------
def load_model(steps: int, model: str | None = None) -> tuple[Any, str, dict, bool]:
    """(pipeline, name, base call kwargs, shapes world?) of `model` (any `dit_cache.load_pipeline` spec; default
    the embedded model, else a tiny random PixArt when it is missing)."""
    try:
        loaded = dc.load_pipeline(model or "tiny")
        name = "tiny-pixart-shapes (embedded)" if loaded.name == "tiny" else loaded.name
    except Exception as e:  # no weights yet
        if model:
            raise
        print(f"embedded model unavailable ({type(e).__name__}: {e}); using a tiny random PixArt")
        loaded, name = dc.load_pipeline("random-tiny:pixart"), "random tiny PixArt (fallback)"
    if loaded.shapes and loaded.name != "tiny":
        name = f"{loaded.name} (shapes world)"
    return loaded.pipe, name, loaded.call_kwargs(steps), loaded.shapes


def prompts_for(embedded: bool, n: int, split: str, seed: int) -> list[str]:
    """Evaluation prompts: held-out-style captions of the shapes world, or fixed fallback prompts."""
    if embedded:
        from training.shapes import split_prompts

        return [c for _, c in split_prompts(split, n, seed)]
    return (FALLBACK_PROMPTS * (n // len(FALLBACK_PROMPTS) + 1))[:n]


def calib_prompts(embedded: bool, n: int) -> list[str]:
    """Calibration prompts for the profiled backends (disjoint from the evaluation prompts)."""
    path = ROOT / "calib_prompts" / "shapes_calib.txt"
    if embedded and path.is_file():
        from dit_cache.backends.profiles import read_prompts

        return read_prompts(path, n)
    if embedded:
        return prompts_for(True, n, "train", 123)
    return (FALLBACK_PROMPTS[::-1] * (n // len(FALLBACK_PROMPTS) + 1))[:n]


def call(base: dict, prompt: str, seed: int) -> dict:
    """Pipeline kwargs of one generation returning latents."""
    return {**base, "prompt": prompt, "output_type": "latent", "generator": torch.Generator("cpu").manual_seed(seed)}


# -- operating points --------------------------------------------------------------------------------
def operating_points(space: dc.ScheduleSpace, steps: int, profiles: dict[str, Any],
                     separate_cfg: bool = False) -> list[tuple[str, str, Any]]:
    """(backend, spec, config) of `dit_cache.baselines` (FORA and every backend at >= 3 points; CFG-branch caching
    with `separate_cfg`), plus FORA with forecast cells between its full steps (N=3,4,5, warm-up 1); `profiles`
    from `dc.resolve.baseline_profiles`."""
    pts: list[tuple[str, str, Any]] = []
    for b in dc.baselines(steps, space.shape[0], separate_cfg=separate_cfg):
        pts.append((b.backend, b.spec, dc.resolve_spec(b.spec, space, steps, profiles=profiles).value))
        if b.spec == "taylorseer:6:1:2":
            pts += [("fora+forecast", f"fora:{n}:1 forecast", dc.fora(space, steps, n, warmup=1).with_forecast())
                    for n in (3, 4, 5)]
    return pts


ABLATION = (("uniform steps", ":uniform:off:off"), ("+ profiled steps", ":profile:off:off"),
            ("+ linear residual correction", ":profile:on:off"), ("+ interval correction (full)", ""))


def ablation_points(profiles: dict[str, Any], key: str) -> list[tuple[str, str, Any]]:
    """ERTACache parts added one at a time, at the same reuse-step count (same MACs): profile `key` of `profiles`."""
    return [("erta-ablation", name, dc.parse_spec(f"erta:{key}{fields}", profiles=profiles)) for name, fields in ABLATION]


# -- measurement -------------------------------------------------------------------------------------
def generate(pipe: Any, base: dict, prompts: list[str], seeds: list[int], spec: Any = None) -> dict[str, Any]:
    """Latents for every (prompt, seed) under `spec` (None = uncached), MACs and peak cache bytes."""
    handle = dc.accelerate(pipe, spec) if spec is not None else None
    peak = [0]
    hook = None
    if handle is not None:
        hook = pipe.transformer.register_forward_hook(
            lambda *_: peak.__setitem__(0, max(peak[0], handle.backend.cache_bytes())))
    lat = []
    try:
        with torch.no_grad():
            for p in prompts:
                for s in seeds:
                    lat.append(pipe(**call(base, p, s)).images)
        macs = handle.stats.macs() if handle else None
        frac = handle.stats.compute_fraction() if handle else 1.0
    finally:
        if hook is not None:
            hook.remove()
        if handle is not None:
            handle.remove()
    return {"latents": torch.cat(lat), "macs": macs, "compute_fraction": frac, "peak_cache_bytes": peak[0]}


def wall_times(pipe: Any, base: dict, specs: list[Any], repeats: int) -> list[list[float]]:
    """Seconds per generation for each spec (index 0 = uncached), interleaved and rotated per repeat."""
    times: list[list[float]] = [[] for _ in specs]
    n = len(specs)
    for r in range(repeats):
        for j in range(n):
            i = (j + r) % n
            handle = dc.accelerate(pipe, specs[i]) if specs[i] is not None else None
            start = time.perf_counter()
            with torch.no_grad():
                pipe(**call(base, "timing prompt", 0))
            times[i].append(time.perf_counter() - start)
            if handle is not None:
                handle.remove()
    return times


def fidelity(pipe: Any, lat: torch.Tensor, ref: torch.Tensor, ref_img: torch.Tensor) -> dict[str, float]:
    """PSNR (dB, capped at 100 for identical images) and latent MSE against the uncached run."""
    from eval.fidelity import latent_mse, psnr

    return {"psnr": min(100.0, psnr(decode(pipe, lat), ref_img)), "latent_mse": latent_mse(lat, ref)}


def adherence(pipe: Any, lat: torch.Tensor, prompts: list[str], seeds: list[int]) -> dict[str, float] | None:
    """Per-attribute accuracy and all-correct rate (embedded model only)."""
    from eval.shapes_scorer import adherence as score

    imgs = (decode(pipe, lat) * 255).round().to(torch.uint8)
    res = score(imgs, [p for p in prompts for _ in seeds])
    return {k: v for k, v in res.items() if k != "per_sample"}


def winners(points: list[dict], targets: tuple[float, ...] = (2.0, 3.0)) -> dict[str, dict | None]:
    """Best PSNR among points reaching each MACs speedup target (within 5%)."""
    out: dict[str, dict | None] = {}
    for t in targets:
        ok = [p for p in points if p["macs_speedup"] >= 0.95 * t and p["backend"] != "erta-ablation"]
        best = max(ok, key=lambda p: p["psnr"], default=None)
        out[f"{t:g}x"] = None if best is None else {k: best[k] for k in ("backend", "setting", "macs_speedup", "psnr")}
    return out


def speedup_axes(size: tuple[float, float]) -> tuple:
    """A (figure, axes) for a MACs-speedup vs PSNR plot (matplotlib without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)


def save_speedup_plot(fig, ax, path: Path, title: str, xlabel: str = "MACs speedup (x)") -> None:
    """Label, grid, legend; write `path` (its folder made) and close the figure."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel("PSNR vs uncached (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot(points: list[dict], path: Path, title: str) -> None:
    """MACs speedup vs PSNR, one line per backend."""
    fig, ax = speedup_axes((7, 4.5))
    for name in dict.fromkeys(p["backend"] for p in points if p["backend"] not in ("uncached", "erta-ablation")):
        pts = sorted((p["macs_speedup"], p["psnr"]) for p in points if p["backend"] == name)
        ax.plot(*zip(*pts), marker="o", label=name)
    save_speedup_plot(fig, ax, path, title)


def table(points: list[dict]) -> str:
    """Markdown table of the results."""
    head = "| backend | setting | MACs speedup | wall speedup | PSNR (dB) | latent MSE | all-correct | extra memory (KiB) |"
    rows = [head, "|" + "---|" * 8]
    for p in points:
        adh = p.get("adherence") or {}
        ac = f"{adh['all_correct']:.2f}" if "all_correct" in adh else "—"
        wall = f"{p['wall_speedup']:.2f}" if p.get("wall_speedup") else "—"
        rows.append(f"| {p['backend']} | {p['setting']} | {p['macs_speedup']:.2f} | {wall} | {p['psnr']:.2f} | "
                    f"{p['latent_mse']:.2e} | {ac} | {p['peak_cache_bytes'] / 1024:.0f} |")
    return "\n".join(rows)


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 prompts, 1 seed, 1 repeat, temp output")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--prompts", type=int, default=16, help="evaluation prompts (val split of the shapes world)")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per prompt")
    ap.add_argument("--calib", type=int, default=8, help="calibration prompts for ERTACache / TeaCache")
    ap.add_argument("--repeats", type=int, default=7, help="timing repetitions (interleaved, rotated)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default=None, help="default tiny: " + MODEL_HELP)
    ap.add_argument("--only", nargs="*", default=None, help="run only these backends (e.g. fora erta teacache first-block)")
    ap.add_argument("--out", type=Path, default=None, help=f"JSON (default {OUT}; --quick: a temp dir)")
    ap.add_argument("--plot", type=Path, default=None, help=f"Pareto plot (default {PLOT}; --quick: a temp dir)")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.seeds, args.calib, args.repeats = 2, 1, 2, 1
        tmp = Path(tempfile.mkdtemp(prefix="dit-cache-bench-"))
        args.out = args.out or tmp / "backends.json"
        args.plot = args.plot or tmp / "backends_pareto.png"
    args.out, args.plot = args.out or OUT, args.plot or PLOT
    return args


def _points(space: dc.ScheduleSpace, steps: int, profiles: dict[str, Any], only: list[str] | None,
            separate_cfg: bool = False):
    """Operating points and the ERTACache ablation (at the middle reuse budget), filtered by --only."""
    pts = operating_points(space, steps, profiles, separate_cfg)
    pts += ablation_points(profiles, f"reuse{list(erta_reuse_points(steps))[1]}")
    if only:
        keep = {o.replace("_", "-") for o in only}  # the older spelling first_block, delta_dit, cg_taylor
        pts = [p for p in pts if p[0] in keep or (p[0] == "erta-ablation" and "erta" in keep)]
    return pts


def _measure(pipe: Any, base: dict, prompts: list[str], seeds: list[int], pts: list, embedded: bool) -> list[dict]:
    """The uncached row, then one row per point: MACs, fidelity, adherence, peak cache memory."""
    ref = generate(pipe, base, prompts, seeds)
    ref_img = decode(pipe, ref["latents"])
    uncached = {"backend": "uncached", "setting": "-", "macs_speedup": 1.0, "compute_fraction": 1.0,
                "psnr": 100.0, "latent_mse": 0.0, "peak_cache_bytes": 0}
    if embedded:
        uncached["adherence"] = adherence(pipe, ref["latents"], prompts, seeds)
    results = [uncached]
    for backend, setting, spec in pts:
        r = generate(pipe, base, prompts, seeds, spec)
        row = {"backend": backend, "setting": setting, "macs_speedup": r["macs"]["speedup"],
               "compute_fraction": r["compute_fraction"], **fidelity(pipe, r["latents"], ref["latents"], ref_img),
               "peak_cache_bytes": r["peak_cache_bytes"]}
        if embedded:
            row["adherence"] = adherence(pipe, r["latents"], prompts, seeds)
        results.append(row)
        print(f"{backend:14s} {setting:32s} MACs x{row['macs_speedup']:.2f}  PSNR {row['psnr']:.2f}")
    return results


def main() -> None:
    args = _args()
    torch.set_num_threads(args.threads)
    pipe, model, base, embedded = load_model(args.steps, args.model)
    space = dc.space_of(pipe.transformer)
    prompts = prompts_for(embedded, args.prompts, "val", 7)
    seeds = list(range(args.seeds))
    calib = [call(base, p, 1000 + i) for i, p in enumerate(calib_prompts(embedded, args.calib))]
    t0 = time.perf_counter()
    profiles = dc.resolve.baseline_profiles(pipe, calib, args.steps, model)
    print(f"profiles made in {time.perf_counter() - t0:.1f} s")
    separate_cfg = dc.resolve.calls_per_step(pipe, calib[0]) == 2  # FLUX true CFG: CFG-branch caching applies
    pts = _points(space, args.steps, profiles, args.only, separate_cfg)
    results = _measure(pipe, base, prompts, seeds, pts, embedded)
    times = wall_times(pipe, base, [None] + [s for _, _, s in pts], args.repeats)
    for row, ts in zip(results, times):
        row["wall_median_s"] = statistics.median(ts)
        row["wall_speedup"] = statistics.median(t0_ / t for t0_, t in zip(times[0], ts))
    erta = {int(k[len("reuse"):]): p for k, p in profiles.items() if k.startswith("reuse")}
    report = {
        "model": model, "embedded": embedded, "steps": args.steps, "prompts": len(prompts), "seeds": seeds,
        "calibration_prompts": len(calib), "timing_repeats": args.repeats, "threads": args.threads,
        "device": platform.processor() or platform.machine(), "torch": torch.__version__, "quick": args.quick,
        "points": results, "winners": winners(results),
        "profiles": {"erta": {k: {x: p.get(x) for x in ("reuse_steps", "linear_scale", "phi", "calibration_mse")}
                              for k, p in erta.items()},
                     "teacache_coefficients": profiles["calib"]["coefficients"]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    plot(results, args.plot, f"{model}, {args.steps} steps")
    md = table(results)
    args.out.with_suffix(".md").write_text(md + f"\n\nWinners: {report['winners']}\n")
    print(md)
    print(f"winners: {report['winners']}")
    print(f"wrote {args.out} (+ .md table) and {args.plot}")


if __name__ == "__main__":
    main()
