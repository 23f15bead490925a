"""`dit-cache demo`, the main job: generate a fixed prompt set uncached and under FORA schedules, then
report MACs speedup, wall speedup (interleaved, medians), fidelity to the uncached output and adherence."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import dit_cache as dc
from dit_cache.io import check_out_dir, positive_int
from dit_cache.resolve import MODEL_HELP, parse_model_spec, prompt_kwargs

from .fidelity import decode_latents, latent_mse, psnr, to_uint8
from .grid import image_grid

INTERVALS = (2, 3, 4)


def demo_prompts(model: str, n: int) -> list[str]:
    """Held-out shapes prompts for the embedded model; fixed generic prompts otherwise."""
    if parse_model_spec(model).shapes:
        from training.shapes import split_prompts

        return [c for _, c in split_prompts("heldout", n, seed=0, n_objects=None)]
    return [f"a photo of object number {i}" for i in range(n)]


def _call(pipe, prompts: list[str], steps: int, seed: int, latent: bool, defaults: dict | None = None) -> Any:
    """One batch, fixed noise per prompt; `defaults`: the model's call defaults (`dit_cache.load_pipeline`)."""
    gens = [torch.Generator("cpu").manual_seed(seed + i) for i in range(len(prompts))]
    kwargs = {**(defaults or {}), "num_inference_steps": steps, "generator": gens,
              "output_type": "latent" if latent else "pt"}
    return pipe(**prompt_kwargs(pipe, prompts), **kwargs).images


def shipped_schedules(model: str, steps: int) -> list[Path]:
    """Learned schedules shipped for an embedded model (`dit-cache search` output) at this step count."""
    ms = parse_model_spec(model)
    if ms.zoo_name is None:
        return []
    from dit_cache.zoo import ZOO_DIR

    files = sorted((ZOO_DIR / "schedules" / ms.zoo_name).glob("*.json"))
    return [f for f in files if dc.Schedule.load(f).steps == steps]


def demo_variants(pipe, model: str, steps: int, specs: list[str] | None = None,
                  resample: bool = False) -> dict[str, Any]:
    """Uncached, FORA N=2,3,4, the learned schedules shipped for the model, then every extra caching spec
    (any of `dit_cache.resolve_spec`'s grammar: schedule files, static specs, dynamic backends), by display name."""
    space = dc.space_of(pipe.transformer)
    variants: dict[str, Any] = {"uncached": None}
    variants.update({f"fora-{n}": dc.fora(space, steps, n) for n in INTERVALS})
    for text in [*map(str, shipped_schedules(model, steps)), *(specs or [])]:
        spec = dc.resolve_spec(text, space, steps, resample=resample)
        name = spec.name
        if name in variants:  # e.g. a file named `uncached` or `fora-2`: never replace a built-in row
            name = f"{name} ({Path(text).name if Path(text).is_file() else text})"
        while name in variants:
            name += "+"
        variants[name] = spec.value
    return variants


def _generate_interleaved(pipe, variants: dict[str, Any], prompts: list[str], steps: int, seed: int, repeats: int,
                          defaults: dict) -> tuple[dict[str, torch.Tensor], dict[str, list[float]], dict[str, dict]]:
    """Latents of the warm-up round, seconds of the `repeats` timed rounds (interleaved, rotated), MACs."""
    latents: dict[str, torch.Tensor] = {}
    secs: dict[str, list[float]] = {v: [] for v in variants}
    macs: dict[str, dict] = {}
    order = list(variants)
    total = (repeats + 1) * len(order)
    with torch.inference_mode(), tqdm(total=total, desc="demo: generating (interleaved)", unit="run") as bar:
        for rep in range(repeats + 1):  # rep 0 = warm-up, and the outputs compared below
            for name in order[rep % len(order):] + order[:rep % len(order)]:  # interleaved, rotated
                handle = dc.accelerate(pipe, variants[name]) if variants[name] is not None else None
                t0 = time.perf_counter()
                lat = _call(pipe, prompts, steps, seed, latent=True, defaults=defaults)
                dt = time.perf_counter() - t0
                if handle is not None:
                    macs[name] = handle.stats.macs()
                    handle.remove()
                if rep == 0:
                    latents[name] = lat
                else:
                    secs[name].append(dt)
                bar.set_postfix_str(f"{name} {dt:.2f}s")
                bar.update()
    return latents, secs, macs


def _rows(order: list[str], latents: dict, images: dict, secs: dict, macs: dict, scorer, prompts: list[str]) -> list[dict]:
    """One row per variant: MACs and wall speedups, PSNR and latent MSE vs uncached, adherence if scored."""
    base = statistics.median(secs["uncached"])
    rows = []
    for name in order:
        row = {
            "schedule": name,
            "macs_speedup": macs[name]["speedup"] if name in macs else 1.0,
            "wall_speedup": base / statistics.median(secs[name]),
            "wall_median_s": statistics.median(secs[name]),
            "psnr_db": psnr(images[name], images["uncached"]) if name != "uncached" else float("inf"),
            "latent_mse": latent_mse(latents[name], latents["uncached"]),
        }
        if scorer is not None:
            row["adherence"] = scorer(images[name], prompts)
        rows.append(row)
    return rows


def _write(out: Path, report: dict, images: dict, order: list[str], prompts: list[str]) -> dict:
    """grid.png, report.json and report.md; prints the table."""
    out.mkdir(parents=True, exist_ok=True)
    to_u8 = {n: (im.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy() for n, im in images.items()}
    grid = image_grid([[to_u8[n][i] for n in order] for i in range(len(prompts))], order, prompts, out / "grid.png")
    report["grid"] = str(grid)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    table = format_table(report["rows"])
    (out / "report.md").write_text(f"# dit-cache demo ({report['model']}, {report['steps']} steps)\n\n{table}\n\n"
                                   "![grid](grid.png)\n")
    print(table)
    print(f"\nwrote {out / 'grid.png'}, {out / 'report.json'}, {out / 'report.md'}")
    return report


def run_demo(model: str = "tiny", out: Path = Path("demo_out"), steps: int = 20, repeats: int = 3,
             seed: int = 0, num_prompts: int = 16, schedules: list[str] | None = None, resample: bool = False) -> dict:
    """Run the demo; returns (and writes) the report. `schedules`: extra caching specs (schedule files, fora:N,
    teacache:0.25, ...; see `dit_cache.resolve_spec`)."""
    check_out_dir(out, "--out")  # before generating: a bad --out must not cost the run
    loaded = dc.load_pipeline(model)
    pipe = loaded.pipe
    prompts = demo_prompts(model, num_prompts)
    variants = demo_variants(pipe, model, steps, schedules, resample)
    latents, secs, macs = _generate_interleaved(pipe, variants, prompts, steps, seed, repeats, loaded.call_defaults)
    with torch.inference_mode():
        images = {name: decode_latents(pipe, lat) for name, lat in latents.items()}
    order = list(variants)
    rows = _rows(order, latents, images, secs, macs, _adherence_fn(model), prompts)
    report = {
        "command": "dit-cache demo", "model": model, "steps": steps, "repeats": repeats, "seed": seed,
        "prompts": prompts, "rows": rows, "grid": None,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "note": "wall times are medians of interleaved runs on this machine; MACs are exact (full convention)",
    }
    return _write(out, report, images, order, prompts)


def _adherence_fn(model: str):
    """Mean attribute accuracy (colour, shape, size, position) of the shapes scorer; None for other models."""
    if not parse_model_spec(model).shapes:
        return None
    from .shapes_scorer import adherence

    def score(images: torch.Tensor, prompts: list[str]) -> float:
        u8 = to_uint8(images)  # (N, 3, H, W)
        res = adherence(u8, prompts)
        return float(np.mean([res[k] for k in ("color", "shape", "size", "position")]))

    return score


def format_table(rows: list[dict]) -> str:
    """Markdown table of the demo rows."""
    has_adh = "adherence" in rows[0]
    head = "| schedule | MACs speedup | wall speedup | PSNR vs uncached (dB) | latent MSE |" + (" attribute accuracy |" if has_adh else "")
    lines = [head, "|" + "---|" * (6 if has_adh else 5)]
    for r in rows:
        psnr_s = "∞" if not np.isfinite(r["psnr_db"]) else f"{r['psnr_db']:.2f}"
        line = f"| {r['schedule']} | {r['macs_speedup']:.2f}× | {r['wall_speedup']:.2f}× | {psnr_s} | {r['latent_mse']:.4g} |"
        if has_adh:
            line += f" {r['adherence']:.1%} |"
        lines.append(line)
    return "\n".join(lines)


def _cmd(args: argparse.Namespace) -> int:
    # bad input: one `error:` line from dit_cache.cli.main
    run_demo(model=args.model, out=Path(args.out), steps=args.steps, repeats=args.repeats, seed=args.seed,
             num_prompts=args.num_prompts, schedules=args.schedule, resample=args.resample)
    return 0


def register(sub) -> None:
    """Add `dit-cache demo` to the CLI (entry point of the `dit_cache.commands` group)."""
    p = sub.add_parser("demo", help="the main job: generate with and without caching, print the trade-off",
                       description=__doc__)
    p.add_argument("--model", default="tiny", help=MODEL_HELP)
    p.add_argument("--out", default="demo_out", help="folder for grid.png and report.json/md (default demo_out)")
    p.add_argument("--steps", type=positive_int, default=20, help="denoising steps (default 20)")
    p.add_argument("--repeats", type=positive_int, default=3, help="timed runs per variant, interleaved (default 3)")
    p.add_argument("--num-prompts", type=positive_int, default=16, help="prompts in the batch (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schedule", action="append", default=[], metavar="SPEC",
                   help="also run this caching spec: a schedule file (dit-cache or ECAD JSON, e.g. a `dit-cache "
                        "search` front/*.json), fora:N[:WARMUP], cache:COMPONENT:N, teacache:DELTA, first-block:TAU, "
                        "... (the grammar of `dit-cache eval --schedules`); repeatable. With an embedded model (tiny, "
                        "tiny-flux) the learned schedules shipped for it in dit_cache/zoo/schedules/ run too")
    p.add_argument("--resample", action="store_true", help="resample schedule files to --steps instead of failing")
    p.set_defaults(func=_cmd)
