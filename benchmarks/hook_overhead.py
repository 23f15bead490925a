"""Hook overhead and wall speedup vs MAC-ideal speedup on a mid-size PixArt-shaped transformer (CPU).

Variants run interleaved and rotated (A B C D, B C D A, ...) so that drifting machine load hits all alike. Reported:
medians of each variant's times, and the median over repetitions of the within-repetition ratio
(paired; cancels slow drift of shared CPUs). Model: hidden 384 (6x64), 12 blocks, 32x32 latent (256 tokens), batch 2 (CFG), 20 steps.

    python benchmarks/hook_overhead.py [--repeats 9] [--dtype bf16] [--threads 1]
    python benchmarks/hook_overhead.py --model tiny-flux --dtype fp32   # an embedded model, through its pipeline's
                                                                        # own denoising loop (search.loops)

Writes benchmarks/results/hook_overhead.json (with --model M: hook_overhead_M.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from diffusers import DPMSolverMultistepScheduler

import dit_cache as dc
from dit_cache.zoo.tiny_random import build_midsize_pixart_transformer

OUT = Path(__file__).parent / "results" / "hook_overhead.json"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def denoise(transformer, scheduler, latents, text, steps: int) -> torch.Tensor:
    """A plain CFG-batched DPM-Solver loop over the transformer alone (no text encoder, no VAE)."""
    scheduler.set_timesteps(steps)
    x = latents.clone()
    added = {"resolution": None, "aspect_ratio": None}
    for t in scheduler.timesteps:
        inp = torch.cat([x, x])  # (2B, C, H, W): uncond + cond
        out = transformer(inp, encoder_hidden_states=text, timestep=t.expand(inp.shape[0]),
                          added_cond_kwargs=added, return_dict=False)[0]
        uncond, cond = out[:, :4].chunk(2)
        x = scheduler.step(uncond + 4.5 * (cond - uncond), t, x).prev_sample
    return x


def timed(fn, device: torch.device) -> float:
    """Wall seconds of fn() (CUDA-synchronized on GPU)."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _parse() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (1 is the most stable on shared CPUs)")
    p.add_argument("--model", default=None, help="an embedded model (tiny, tiny-flux) instead of the mid-size "
                   "transformer: its transformer and its pipeline's denoising loop, one prompt (model defaults)")
    p.add_argument("--out", type=Path, default=None, help=f"JSON (default {OUT}, with --model hook_overhead_M.json)")
    args = p.parse_args()
    args.out = args.out or (OUT if args.model is None else OUT.with_name(f"hook_overhead_{args.model.replace('-', '_')}.json"))
    return args


def _measure(transformer, run, schedules: dict, args, device) -> tuple[dict, dict, dict]:
    """Interleaved timed runs of `run()` (one generation; rotated order, repetition 0 = warm-up): (samples, MACs,
    outputs) per variant."""
    variants = ["no-hooks", *schedules]
    samples: dict[str, list[float]] = {v: [] for v in variants}
    macs: dict[str, dict] = {}
    outputs: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for rep in range(args.repeats + 1):
            for v in variants[rep % len(variants):] + variants[: rep % len(variants)]:  # rotate: no fixed position
                handle = dc.accelerate(transformer, schedules[v]) if v in schedules else None
                secs = timed(lambda v=v: outputs.__setitem__(v, run()), device)
                if handle is not None:
                    macs[v] = handle.stats.macs()
                    handle.remove()
                if rep:
                    samples[v].append(secs)
            print(f"rep {rep}: " + ", ".join(f"{v} {samples[v][-1] if rep else secs:.2f}s" for v in variants), flush=True)
    return samples, macs, outputs


def _results(samples: dict, macs: dict, outputs: dict, schedules: dict) -> dict:
    """Medians, wall speedups (plain and paired per repetition) and wall/ideal ratios per variant."""
    base = statistics.median(samples["no-hooks"])
    results = {}
    for v in samples:
        med = statistics.median(samples[v])
        row = {"median_s": med, "min_s": min(samples[v]), "max_s": max(samples[v]), "samples_s": samples[v],
               "wall_speedup": base / med}
        # paired: ratio within each repetition (variants ran back to back), then the median: cancels drift
        row["paired_wall_speedup"] = statistics.median(a / b for a, b in zip(samples["no-hooks"], samples[v]))
        if v in schedules:
            row["mac_ideal_speedup"] = macs[v]["speedup"]
            row["wall_over_ideal"] = row["wall_speedup"] / macs[v]["speedup"]
            row["paired_wall_over_ideal"] = row["paired_wall_speedup"] / macs[v]["speedup"]
            row["compute_fraction"] = schedules[v].compute_fraction()
            row["max_abs_diff_vs_no_hooks"] = float((outputs[v].float() - outputs["no-hooks"].float()).abs().max())
        results[v] = row
    results["compute-all"]["overhead"] = results["compute-all"]["median_s"] / base - 1
    results["compute-all"]["paired_overhead"] = 1 / results["compute-all"]["paired_wall_speedup"] - 1
    return results


def _print(results: dict, out: Path) -> None:
    """The summary table."""
    print(f"\n{'variant':18} {'median s':>9} {'wall x':>7} {'paired x':>8} {'MAC x':>7} {'wall/ideal':>10} {'paired/ideal':>12}")
    for v, r in results.items():
        print(f"{v:18} {r['median_s']:9.3f} {r['wall_speedup']:7.3f} {r['paired_wall_speedup']:8.3f} "
              f"{r.get('mac_ideal_speedup', 1):7.3f} {r.get('wall_over_ideal', float('nan')):10.3f} "
              f"{r.get('paired_wall_over_ideal', float('nan')):12.3f}")
    ca = results["compute-all"]
    print(f"compute-all overhead vs no hooks: {ca['overhead']:+.2%} (medians), {ca['paired_overhead']:+.2%} (paired); "
          f"wrote {out}")


def _workload(args, device: torch.device, dtype: torch.dtype) -> tuple[torch.nn.Module, Any, dict]:
    """(transformer, one-generation callable, model description): the mid-size PixArt transformer under a plain
    CFG-batched loop, or with --model an embedded model under its pipeline's own loop (`search.loops`)."""
    if args.model is None:
        transformer = build_midsize_pixart_transformer(seed=0).to(device, dtype).eval()
        scheduler = DPMSolverMultistepScheduler()
        g = torch.Generator().manual_seed(0)
        latents = torch.randn(1, 4, 32, 32, generator=g).to(device, dtype)  # (B, C, H, W): 256 tokens at patch 2
        text = torch.randn(2, 24, transformer.config.caption_channels, generator=g).to(device, dtype)  # (2B, T, D)
        model = {"hidden": 384, "blocks": 12, "latent": [32, 32], "tokens": 256, "batch": 2, "steps": args.steps}
        return transformer, lambda: denoise(transformer, scheduler, latents, text, args.steps), model
    from search.loops import make_loop

    loaded = dc.load_pipeline(args.model, device=str(device), dtype=dtype)
    loop = make_loop(loaded.pipe, ["a small red circle in the top left on a gray background"], [0], args.steps,
                     loaded.call_defaults)
    return loaded.pipe.transformer, loop.run, {"name": args.model, "family": loaded.family, "steps": args.steps,
                                               "loop": type(loop).__name__, "batch": 1}


def main() -> None:
    """Run the benchmark; write JSON."""
    args = _parse()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    transformer, run, model = _workload(args, device, dtype)
    space = dc.space_of(transformer)
    schedules = {
        "compute-all": dc.compute_all(space, args.steps),
        "fora-2": dc.fora(space, args.steps, 2),
        "random-60%-reuse": dc.random_schedule(space, args.steps, p=0.6, seed=0),
    }
    results = _results(*_measure(transformer, run, schedules, args, device), schedules)
    report = {
        "benchmark": "hook_overhead",
        "model": model,
        "dtype": args.dtype, "threads": args.threads, "repeats": args.repeats, "device": str(device),
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    _print(results, args.out)


if __name__ == "__main__":
    main()
