"""Validate a learned front on held-out prompts against FORA and the dynamic backends.

    python -m search.validate --run runs/shapes --model tiny --num-prompts 64
    python -m search.validate --model tiny-flux --out v --specs "fora:4+cfg-cache:2:2" \
        dit_cache/zoo/schedules/tiny-flux-shapes/learned-3.81x.json

`--specs` validates any caching specs (shipped schedule files, combinations such as a learned schedule under
CFG-branch caching) as candidates beside, or instead of, a run's front.

Every variant (uncached, FORA N=2,3,4, every dynamic backend at the operating points of
`dit_cache.baselines` -- or at its defaults, `--dynamic defaults` -- and every front schedule) generates the same held-out prompts with the same seeds through the real pipeline under
`dit_cache.accelerate`. Reported per variant: MACs speedup (exact, from the runtime's counters),
latent MSE and PSNR against the uncached output, and shapes adherence when the prompts are shapes
captions (adherence = mean attribute accuracy over colour, shape, size and position; the all-correct
rate is listed too). A front *dominates a baseline at matched MACs* when one front schedule has at least the
baseline's speedup and is no worse on every quality metric (strictly better on one).

Fidelity is judged on PSNR (image and latent, per-prompt dB averaged: the typical image) by default; the mean
latent MSE is reported and judged too, but it is carried by the few prompts whose trajectory bifurcates
under caching, so its ranking changes from one prompt set to the next. Adherence differences between
near-lossless variants are a few judgments out of hundreds, so a third rule counts adherence as no worse
unless the paired per-prompt difference is significantly negative (mean + 1.96·s/√n < 0).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

import dit_cache as dc
from dit_cache.io import positive_int
from dit_cache.resolve import MODEL_HELP
from eval.fidelity import psnr, to_uint8

from .loops import decoder, make_loop
from .objectives import ATTRIBUTES, latent_mse, latent_psnr


def call_kwargs(pipe: Any, steps: int, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Pipeline call arguments of a search / validation generation: the model's call defaults (`defaults`, from
    `dit_cache.resolve.call_defaults`; else the pipeline's own, without resolution binning) at `steps`, latent
    output."""
    base = defaults if defaults is not None else dc.resolve.pipeline_defaults(pipe)
    return {**base, "num_inference_steps": steps, "output_type": "latent"}


def _profile_calls(pipe: Any, steps: int, calib: list[str], seed: int,
                   defaults: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Uncached calls on the calibration prompts, generated as `generate` does (the search's settings)."""
    kw = call_kwargs(pipe, steps, defaults)
    return [{**kw, **dc.resolve.prompt_kwargs(pipe, p), "generator": torch.Generator("cpu").manual_seed(seed + i)}
            for i, p in enumerate(calib)]


def baseline_profiles(pipe: Any, steps: int, calib: list[str], seed: int = 1000,
                      defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The profiles `dit_cache.baselines` names (`dit_cache.resolve.baseline_profiles`), fitted on `calib`."""
    return dc.resolve.baseline_profiles(pipe, _profile_calls(pipe, steps, calib, seed, defaults), steps)


def dynamic_sweep(pipe: Any, steps: int, calib: list[str], seed: int = 1000,
                  defaults: dict[str, Any] | None = None) -> list[tuple[str, Any]]:
    """(name, config) of every dynamic backend at the operating points of `dit_cache.baselines` (~1.3x to ~4x
    MACs speedup; shared with benchmarks/backends.py). TeaCache, MagCache and ERTACache points need profiles:
    they are fitted on `calib` (calibration prompts, never the held-out ones) and left out without them."""
    space = dc.space_of(pipe.transformer)
    profiles = baseline_profiles(pipe, steps, calib, seed, defaults) if calib else None
    calls = _profile_calls(pipe, steps, (calib or ["a photo"])[:1], seed, defaults)
    separate_cfg = dc.resolve.calls_per_step(pipe, calls[0]) == 2  # FLUX true CFG: CFG-branch caching applies
    out = []
    for b in dc.baselines(steps, len(space.block_ids), profiled=bool(calib), separate_cfg=separate_cfg):
        if b.backend != "fora":
            spec = dc.resolve_spec(b.spec, space, steps, profiles=profiles)
            out.append((spec.name, spec.value))
    return out


def heldout_prompts(n: int, seed: int = 0) -> list[str]:
    """Held-out shapes captions (never used by calibration)."""
    from training.shapes import split_prompts

    return [c for _, c in split_prompts("heldout", n, seed=seed, n_objects=None)]


def generate(pipe: Any, prompts: list[str], seeds: list[int], steps: int, spec: Any = None,
             batch: int = 16, defaults: dict[str, Any] | None = None) -> tuple[torch.Tensor, float]:
    """(final latents (N, ...), MACs speedup) of `pipe` under `spec` (None = uncached): the family's denoising
    loop (`search.loops`, bit-identical to `pipe(...)`, tested per family) under `dc.accelerate(pipe, spec)`."""
    loops = [make_loop(pipe, prompts[i:i + batch], seeds[i:i + batch], steps, defaults)
             for i in range(0, len(prompts), batch)]
    loops[0].set_timesteps(pipe.scheduler)  # as `pipe(...)` does: the handle reads the step count from it
    handle = dc.accelerate(pipe, spec) if spec is not None else None
    try:
        out = [loop.run(handle) for loop in loops]
        speedup = handle.stats.macs()["speedup"] if handle is not None else 1.0
    finally:
        if handle is not None:
            handle.remove()
    return torch.cat(out), speedup


def run_calibration_prompts(run: Path, n: int) -> list[str]:
    """The first `n` calibration prompts of a search run (from its checkpoint's settings)."""
    if n <= 0:
        return []
    ck = run / "checkpoint.json"
    if not ck.exists():
        raise FileNotFoundError(f"no checkpoint.json in {run}: the TeaCache/MagCache/ERTACache profiles need the run's "
                                "calibration prompts; pass --calib-prompts 0 to skip those backends")
    from .nsga import read_prompts

    return read_prompts(json.loads(ck.read_text())["config"]["prompts"], n)


def shapes_calibration_prompts(n: int) -> list[str]:
    """The first `n` prompts of the search's default calibration set (never the held-out ones)."""
    from .config import SearchConfig, read_prompts

    return read_prompts(Path(__file__).resolve().parents[1] / SearchConfig().prompts, n) if n > 0 else []


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-image PSNR of decoded images (`eval.fidelity.psnr`, as the demo and `dit-cache eval`)."""
    return float("inf") if bool((a == b).all()) else psnr(a, b)


LOWER_IS_BETTER = ("latent_mse",)
CANDIDATES = ("front", "spec")  # row kinds judged against the baselines
RULES = {  # name -> (fidelity metric, adherence within paired noise)
    "psnr": ("psnr_db", False),
    "latent_psnr": ("latent_psnr_db", False),
    "latent_mse": ("latent_mse", False),
    "psnr, adherence within noise": ("psnr_db", True),
}


def paired_not_worse(f: list[float], b: list[float]) -> bool:
    """Per-prompt scores f are not significantly below b: mean(f − b) + 1.96·sd/√n ≥ 0."""
    d = torch.tensor(f, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    se = float(d.std(unbiased=True)) / math.sqrt(len(d)) if len(d) > 1 else 0.0
    return float(d.mean()) + 1.96 * se >= 0


def dominates(f: dict[str, Any], b: dict[str, Any], metrics: list[str], noise_aware: bool = False) -> bool:
    """f has at least b's speedup and is no worse on every metric, strictly better on one (or faster).
    `noise_aware`: adherence counts as no worse unless significantly worse per prompt (`paired_not_worse`)."""
    if f["macs_speedup"] < b["macs_speedup"] - 1e-9:
        return False
    better, strict = [], []
    for m in metrics:
        lo = m in LOWER_IS_BETTER
        if noise_aware and m == "adherence" and "adherence_per_prompt" in f:
            better.append(paired_not_worse(f["adherence_per_prompt"], b["adherence_per_prompt"]))
            strict.append(False)
            continue
        better.append(f[m] <= b[m] if lo else f[m] >= b[m])
        strict.append(f[m] < b[m] if lo else f[m] > b[m])
    return all(better) and (any(strict) or f["macs_speedup"] > b["macs_speedup"] + 1e-9)


def _load_front(run: Path) -> list[dc.Schedule]:
    files = sorted((run / "front").glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no front/*.json in {run}: run `dit-cache search --out {run}` first")
    return [dc.Schedule.load(f) for f in files]


def _adherence_scorer(decode: Any, prompts: list[str], shapes: bool | None):
    """Shapes adherence of final latents (None unless the prompts are shapes captions, or `shapes` is False)."""
    if shapes is None:
        try:
            from training.shapes import parse_caption

            for p in prompts:
                parse_caption(p)
            shapes = True
        except Exception:
            shapes = False
    if not shapes:
        return None
    from eval.shapes_scorer import adherence, load_classifier

    clf = load_classifier()

    def scorer(lat: torch.Tensor) -> dict[str, Any]:
        u8 = to_uint8(decode(lat))  # (N, 3, H, W)
        res = adherence(u8, prompts, clf, per_sample=True)
        per = [sum(r[k] for k in ATTRIBUTES) / len(ATTRIBUTES) for r in res["per_sample"]]
        return {"adherence": sum(res[k] for k in ATTRIBUTES) / len(ATTRIBUTES), "all_correct": res["all_correct"],
                "adherence_per_prompt": per}

    return scorer


def baseline_variants(pipe: Any, steps: int, dynamic: bool | str, calib: list[str] | None,
                      defaults: dict[str, Any] | None = None) -> list[tuple[str, str, Any]]:
    """(name, kind, schedule or config): uncached, FORA N=2,3,4, then the dynamic backends (see `validate`)."""
    space = dc.space_of(pipe.transformer)
    fora = [dc.resolve_spec(b.spec, space, steps) for b in dc.baselines(steps, len(space.block_ids), profiled=False)
            if b.backend == "fora"]
    variants: list[tuple[str, str, Any]] = [("uncached", "baseline", None)]
    variants += [(f.name, "fora", f.value) for f in fora]
    if dynamic == "sweep":
        variants += [(name, "dynamic", cfg) for name, cfg in dynamic_sweep(pipe, steps, calib or [], defaults=defaults)]
    elif dynamic:
        variants += [(r.name, "dynamic", r.value) for r in (dc.resolve_spec(b.spec) for b in dc.DEFAULT_BASELINES)]
    return variants


def _evaluate(pipe: Any, decode: Any, prompts: list[str], seeds: list[int], steps: int, scorer, rows: list[dict[str, Any]],
              ref: dict[str, torch.Tensor], name: str, kind: str, spec: Any, defaults: dict[str, Any] | None = None) -> None:
    """Generate under `spec` and append its row (the first variant evaluated is the reference)."""
    try:
        lat, speedup = generate(pipe, prompts, seeds, steps, spec, defaults=defaults)
    except Exception as e:  # a dynamic backend that needs a profile or does not support this model
        rows.append({"variant": name, "kind": kind, "skipped": f"{type(e).__name__}: {e}"})
        return
    img = decode(lat)
    ref.setdefault("lat", lat)
    ref.setdefault("img", img)
    row = {"variant": name, "kind": kind, "macs_speedup": speedup,
           "latent_mse": float(latent_mse(lat, ref["lat"]).mean()), "psnr_db": _psnr(img, ref["img"]),
           "latent_psnr_db": float("inf") if bool((lat == ref["lat"]).all())
           else float(latent_psnr(lat, ref["lat"]).mean())}
    if scorer is not None:
        row.update(scorer(lat))
    rows.append(row)


def validate(run: Path | None, model: str, prompts: list[str], seeds: list[int], *, dynamic: bool | str = True,
             pipe: Any = None, shapes: bool | None = None, calib: list[str] | None = None,
             progress: bool = False, front_max: int | None = None, specs: list[str] = (),
             steps: int | None = None) -> dict[str, Any]:
    """Evaluate the run's front (`run`, or None) and the caching `specs` (kind "spec", judged as the front is)
    against the baselines; returns rows and verdicts. Generations take the run's step count; without a run,
    `steps` (default 20). A `steps` that differs from the run's is refused.

    ``dynamic``: False (none), True/"defaults" (each dynamic backend at its defaults, `dit_cache.DEFAULT_BASELINES`)
    or "sweep" (the operating points of `dit_cache.baselines`; `calib` prompts fit the TeaCache/MagCache/ERTACache profiles).
    ``front_max``: evaluate about this many front schedules (None = all), chosen after the baselines ran
    (`select_front`): for each baseline the lowest-error front point at >= its MACs speedup, then points
    evenly spread over the front up to `front_max` in total.
    """
    from tqdm.auto import tqdm

    front = _load_front(run) if run is not None else []
    if not front and not specs:
        raise ValueError("nothing to validate: pass a search run (--run) or caching specs (--specs)")
    if front and steps is not None and steps != front[0].steps:
        raise ValueError(f"--steps {steps} does not match the run's schedules ({front[0].steps} steps): leave "
                         "--steps out with --run")
    steps = front[0].steps if front else (steps or 20)
    pipe = pipe if pipe is not None else dc.load_pipeline(model).pipe
    space = dc.space_of(pipe.transformer)
    extra = [(r.name, "spec", r.value) for r in (dc.resolve_spec(s, space, steps) for s in specs)]  # bad spec: now
    defaults = dc.resolve.call_defaults(model, pipe)  # the settings the search generated with
    decode = decoder(pipe, steps, defaults)
    scorer = _adherence_scorer(decode, prompts, shapes)
    variants = baseline_variants(pipe, steps, dynamic, calib, defaults)
    rows: list[dict[str, Any]] = []
    ref: dict[str, torch.Tensor] = {}
    with torch.inference_mode(), tqdm(total=len(variants), desc="validate", unit="variant", disable=not progress) as bar:
        for v in variants:  # uncached first: it is the reference
            _evaluate(pipe, decode, prompts, seeds, steps, scorer, rows, ref, *v, defaults=defaults)
            bar.update()
        chosen = [(s.name, "front", s) for s in select_front(front, rows, front_max)] + extra
        bar.total += len(chosen)
        for v in chosen:
            _evaluate(pipe, decode, prompts, seeds, steps, scorer, rows, ref, *v, defaults=defaults)
            bar.update()
    return {"front_total": len(front), "run": None if run is None else str(run), "specs": list(specs), "model": model, "steps": steps, "prompts": prompts, "seeds": seeds,
            "rows": rows, "verdicts": verdicts(rows)}


def select_front(front: list[dc.Schedule], rows: list[dict[str, Any]], front_max: int | None) -> list[dc.Schedule]:
    """Front schedules to validate: all, or for every baseline row the front schedule with the lowest
    calibration error among those at >= its MACs speedup, then evenly spread ones up to `front_max` in total."""
    if front_max is None or front_max >= len(front):
        return front
    speed = [float(s.metadata.get("macs_speedup", 0.0)) for s in front]
    err = [float(s.metadata.get("objectives", {}).get("quality_loss", math.inf)) for s in front]
    picked: list[int] = []
    for r in sorted((r for r in rows if r.get("kind") in ("fora", "dynamic") and "skipped" not in r),
                    key=lambda r: r["macs_speedup"]):
        ok = [i for i in range(len(front)) if speed[i] >= r["macs_speedup"] - 1e-9]
        if ok:
            best = min(ok, key=lambda i: (err[i], -speed[i]))
            if best not in picked:
                picked.append(best)
    for i in (round(k * (len(front) - 1) / max(1, front_max - 1)) for k in range(front_max)):
        if len(picked) >= front_max:
            break
        if i not in picked:
            picked.append(i)
    return [front[i] for i in sorted(picked)]


def verdicts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Front vs each baseline at matched MACs under every rule of RULES (``dominated`` = the first, PSNR),
    and the ≥ 2.5× / adherence-within-3-points check."""
    ok = [r for r in rows if "skipped" not in r]
    adh = ["adherence"] if ok and all("adherence" in r for r in ok) else []
    front = [r for r in ok if r["kind"] in CANDIDATES]
    by_rule: dict[str, dict[str, list[str]]] = {}
    for rule, (fid, noise) in RULES.items():
        if noise and not adh:
            continue
        by_rule[rule] = {b["variant"]: [f["variant"] for f in front if dominates(f, b, [fid, *adh], noise)]
                         for b in ok if b["kind"] in ("fora", "dynamic") and fid in b}
    first = next(iter(RULES))
    out: dict[str, Any] = {"metrics": [RULES[first][0], *adh], "dominated": by_rule.get(first, {}), "by_rule": by_rule}
    base = next((r for r in ok if r["kind"] == "baseline"), None)
    if base is not None and adh:
        fast = [f for f in front if f["macs_speedup"] >= 2.5 and f["adherence"] >= base["adherence"] - 0.03]
        out["fast_and_adherent"] = [f["variant"] for f in fast]
    return out


def _winners(names: list[str]) -> str:
    """Table cell: the first dominating front schedule (+ how many more), or not dominated."""
    return f"{names[0]}" + (f" (+{len(names) - 1})" if len(names) > 1 else "") if names else "**not dominated**"


def to_markdown(result: dict[str, Any]) -> str:
    """The validation table."""
    has_adh = any("adherence" in r for r in result["rows"])
    head = ("| variant | kind | MACs speedup | latent MSE | latent PSNR (dB) | PSNR (dB) |"
            + (" adherence | all correct |" if has_adh else ""))
    lines = [head, "|" + "---|" * (8 if has_adh else 6)]
    for r in result["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['variant']} | {r['kind']} | skipped: {r['skipped'][:80]} |")
            continue
        psnr = "∞" if math.isinf(r["psnr_db"]) else f"{r['psnr_db']:.2f}"
        lpsnr = r.get("latent_psnr_db", float("nan"))
        lpsnr = "∞" if math.isinf(lpsnr) else f"{lpsnr:.2f}"
        line = (f"| {r['variant']} | {r['kind']} | {r['macs_speedup']:.2f}× | {r['latent_mse']:.4g} | {lpsnr} | "
                f"{psnr} |")
        if has_adh:
            line += f" {100 * r['adherence']:.1f} % | {100 * r.get('all_correct', float('nan')):.1f} % |"
        lines.append(line)
    v = result["verdicts"]
    by_rule = v.get("by_rule") or {"latent_mse": v["dominated"]}
    rules = list(by_rule)
    lines += ["", "Dominated at matched MACs (fidelity rule + adherence; cell = front schedules that dominate):", "",
              "| baseline | " + " | ".join(rules) + " |", "|---|" + "---|" * len(rules)]
    for b in by_rule[rules[0]]:
        cells = [_winners(by_rule[r].get(b, [])) for r in rules]
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    if "fast_and_adherent" in v:
        lines.append(f"- ≥ 2.5× with adherence within 3 points of uncached: {', '.join(v['fast_and_adherent']) or 'none'}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path:
    """Held-out PSNR, mean latent MSE (and adherence) vs MACs speedup: front, FORA, dynamic backends, uncached."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if "skipped" not in r]
    has_adh = all("adherence" in r for r in rows)
    fig, axes = plt.subplots(1, 3 if has_adh else 2, figsize=(17 if has_adh else 12, 4.6), squeeze=False)
    style = {"front": ("tab:red", "o", "learned front"), "spec": ("tab:purple", "D", "--specs"), "fora": ("tab:blue", "s", "FORA N=2,3,4"),
             "dynamic": ("tab:gray", "^", "dynamic backends (sweep)"), "baseline": ("black", "*", "uncached")}
    panels = [("psnr_db", "held-out PSNR vs uncached, dB (higher is better)", False),
              ("latent_mse", "held-out mean latent MSE vs uncached (lower is better)", True)]
    if has_adh:
        panels.append(("adherence", "held-out adherence: mean attribute accuracy", False))
    for ax, (key, title, log) in zip(axes[0], panels):
        for kind, (color, marker, label) in style.items():
            pts = sorted((r["macs_speedup"], r[key], r["variant"]) for r in rows if r["kind"] == kind)
            if not pts or (kind == "baseline" and (log or key == "psnr_db")):
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, label=label,
                    linestyle="-" if kind == "front" else "none", markersize=7 if kind != "dynamic" else 6)
            if kind in ("fora", "dynamic", "spec"):
                for x, y, name in pts:
                    ax.annotate(name, (x, y), fontsize=6.5, xytext=(3, 3), textcoords="offset points", color=color)
        ax.set_xlabel("MACs speedup (exact)")
        ax.set_title(title, fontsize=10)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{result['model']}: {len(result['prompts'])} held-out prompts, {result['steps']} steps", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m search.validate --run RUN [--model tiny] [--num-prompts 64]."""
    p = argparse.ArgumentParser(prog="python -m search.validate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None, help="a `dit-cache search` output folder (reads RUN/front/*.json)")
    p.add_argument("--specs", nargs="+", default=[], metavar="SPEC",
                   help="caching specs to validate as candidates too (schedule files, fora:4+cfg-cache:2, ...)")
    p.add_argument("--steps", type=positive_int, default=None, help="denoising steps without --run (default 20; "
                   "with --run: the run's)")
    p.add_argument("--model", default="tiny", help="the model the run searched: " + MODEL_HELP)
    p.add_argument("--prompts", default=None, help="prompts file (default: held-out shapes captions)")
    p.add_argument("--num-prompts", type=int, default=64, help="number of prompts (default 64)")
    p.add_argument("--seed", type=int, default=10_000, help="first noise seed (default 10000, unlike the search's)")
    p.add_argument("--dynamic", choices=["sweep", "defaults", "none"], default="sweep",
                   help="dynamic backends: several operating points each (default), defaults only, or none")
    p.add_argument("--calib-prompts", type=int, default=4,
                   help="calibration prompts that fit the TeaCache/MagCache/ERTACache profiles: the run's, or without --run "
                        "calib_prompts/shapes_calib.txt's (default 4; 0: skip them)")
    p.add_argument("--no-dynamic", action="store_true", help="same as --dynamic none")
    p.add_argument("--front-max", type=int, default=None,
                   help="validate the best front schedule at >= each baseline's MACs speedup, then evenly spread "
                        "ones up to N in total (default: every front schedule)")
    p.add_argument("--out", default=None, help="folder for validation.json/md (default RUN/validation; needed "
                                                "without --run)")
    a = p.parse_args(argv)
    if a.run is None and (not a.specs or a.out is None):
        p.error("pass --run RUN (a search output folder), or --specs SPEC ... with --out DIR")
    try:
        if a.prompts:
            from .nsga import read_prompts

            prompts = read_prompts(a.prompts, a.num_prompts)
        else:
            prompts = heldout_prompts(a.num_prompts)
        seeds = [a.seed + i for i in range(len(prompts))]
        dyn = "none" if a.no_dynamic else a.dynamic
        run = Path(a.run) if a.run else None
        calib = [] if dyn != "sweep" else (run_calibration_prompts(run, a.calib_prompts) if run
                                           else shapes_calibration_prompts(a.calib_prompts))
        result = validate(run, a.model, prompts, seeds, dynamic={"none": False, "defaults": True}.get(dyn, dyn),
                          calib=calib, progress=True, front_max=a.front_max, specs=a.specs, steps=a.steps)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"search.validate: error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else Path(a.run) / "validation"
    out.mkdir(parents=True, exist_ok=True)
    (out / "validation.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    md = to_markdown(result)
    (out / "validation.md").write_text(md + "\n")
    plot(result, out / "validation.png")
    print(md)
    print(f"wrote {out / 'validation.json'}, validation.md, validation.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
