"""`dit-cache demo`, the main job: generate a fixed prompt set uncached and under FORA schedules, then
report MACs speedup, wall speedup (interleaved, medians), fidelity to the uncached output and adherence."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import dit_cache as dc
from dit_cache.ecad import load_schedule_file

from .fidelity import decode_latents, latent_mse, psnr, to_uint8
from .generate import load_pipeline
from .grid import image_grid

INTERVALS = (2, 3, 4)


def demo_prompts(model: str, n: int) -> list[str]:
    """Held-out shapes prompts for the embedded model; fixed generic prompts otherwise."""
    if model == "tiny":
        from dit_cache.zoo.shapes import split_prompts

        return [c for _, c in split_prompts("heldout", n, seed=0, n_objects=None)]
    return [f"a photo of object number {i}" for i in range(n)]


def _call(pipe, prompts: list[str], steps: int, seed: int, latent: bool, small: bool = False) -> Any:
    gens = [torch.Generator("cpu").manual_seed(seed + i) for i in range(len(prompts))]  # fixed noise per prompt
    kwargs = {"num_inference_steps": steps, "generator": gens, "output_type": "latent" if latent else "pt"}
    if "PixArt" in type(pipe).__name__:
        kwargs.update(use_resolution_binning=False, clean_caption=False)
        if small:  # random-tiny: a small image keeps the plumbing demo fast (every other model: native size)
            kwargs.update(height=16, width=16)
    return pipe(prompts, **kwargs).images


def shipped_schedules(model: str, steps: int) -> list[Path]:
    """Learned schedules shipped for the embedded model (`dit-cache search` output) at this step count."""
    if model != "tiny":
        return []
    from dit_cache.zoo import DEFAULT_MODEL, ZOO_DIR

    files = sorted((ZOO_DIR / "schedules" / DEFAULT_MODEL).glob("*.json"))
    return [f for f in files if dc.Schedule.load(f).steps == steps]


def run_demo(model: str = "tiny", out: Path = Path("demo_out"), steps: int = 20, repeats: int = 3,
             seed: int = 0, num_prompts: int = 16, schedules: list[str] | None = None) -> dict:
    """Run the demo; returns (and writes) the report. `schedules`: extra schedule files (dit-cache or ECAD JSON)."""
    pipe = load_pipeline(model)
    prompts = demo_prompts(model, num_prompts)
    space = dc.space_of(pipe.transformer)
    variants: dict[str, dc.Schedule | None] = {"uncached": None}
    variants.update({f"fora-{n}": dc.fora(space, steps, n) for n in INTERVALS})
    for f in [*shipped_schedules(model, steps), *map(Path, schedules or [])]:
        s = load_schedule_file(f)
        why = s.space.describe_mismatch(space)
        if why:
            raise ValueError(f"schedule {f} does not fit this model: {why}")
        if s.steps != steps:
            raise ValueError(f"schedule {f} has {s.steps} steps, the demo runs {steps}: pass --steps {s.steps}")
        variants[s.name or Path(f).stem] = s
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
                lat = _call(pipe, prompts, steps, seed, latent=True, small=model == "random-tiny")
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
        images = {name: decode_latents(pipe, lat) for name, lat in latents.items()}

    scorer = _adherence_fn(model)
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

    out.mkdir(parents=True, exist_ok=True)
    to_u8 = {n: (im.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy() for n, im in images.items()}
    grid = image_grid([[to_u8[n][i] for n in order] for i in range(len(prompts))], order, prompts, out / "grid.png")
    report = {
        "command": "dit-cache demo", "model": model, "steps": steps, "repeats": repeats, "seed": seed,
        "prompts": prompts, "rows": rows, "grid": str(grid),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "note": "wall times are medians of interleaved runs on this machine; MACs are exact (full convention)",
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    table = format_table(rows)
    (out / "report.md").write_text(f"# dit-cache demo ({model}, {steps} steps)\n\n{table}\n\n![grid](grid.png)\n")
    print(table)
    print(f"\nwrote {out / 'grid.png'}, {out / 'report.json'}, {out / 'report.md'}")
    return report


def _adherence_fn(model: str):
    """Mean attribute accuracy (colour, shape, size, position) of the shapes scorer; None for other models."""
    if model != "tiny":
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
    try:
        run_demo(model=args.model, out=Path(args.out), steps=args.steps, repeats=args.repeats, seed=args.seed,
                 num_prompts=args.num_prompts, schedules=args.schedule)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"dit-cache demo: error: {e}", file=sys.stderr)
        return 2
    return 0


def register(sub) -> None:
    """Add `dit-cache demo` to the CLI (entry point of the `dit_cache.commands` group)."""
    p = sub.add_parser("demo", help="the main job: generate with and without caching, print the trade-off",
                       description=__doc__)
    p.add_argument("--model", default="tiny", help="'tiny' (embedded trained model, default), 'random-tiny', or a path")
    p.add_argument("--out", default="demo_out", help="folder for grid.png and report.json/md (default demo_out)")
    p.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per variant, interleaved (default 3)")
    p.add_argument("--num-prompts", type=int, default=16, help="prompts in the batch (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schedule", action="append", default=[], metavar="FILE",
                   help="also run this schedule file (dit-cache or ECAD JSON, e.g. a `dit-cache search` front/*.json); "
                        "repeatable. With --model tiny the learned schedules shipped in dit_cache/zoo/schedules/ run too")
    p.set_defaults(func=_cmd)
