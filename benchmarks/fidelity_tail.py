"""How much of a mean latent MSE do the worst prompts carry? FORA N=2 vs ERTACache on two prompt sets.

    python benchmarks/fidelity_tail.py            # ~3 min on 2 CPU cores; writes results/fidelity_tail.json

Counts and errors only (no timing). On the embedded model: the uncached output, FORA N=2, ERTACache
(reuse 10 of 20 steps, profiled on the search's calibration prompts as `search.validate` does, with and
without its two corrections) and a static schedule that reuses ERTACache's profiled steps, on the first 24
calibration prompts (the search's seeds) and on 96 held-out prompts (the validation's seeds). Per
variant: mean, median, p90 and max per-prompt latent MSE, the share of the mean held by the 5 worst
prompts, and the mean per-prompt latent PSNR.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import dit_cache as dc
from dit_cache.backends.erta_profile import profile_erta
from search.config import read_prompts
from search.objectives import latent_mse, latent_psnr
from search.validate import generate, heldout_prompts

RESULTS = Path(__file__).parent / "results"


def stats(lat: torch.Tensor, ref: torch.Tensor) -> dict:
    """Tail statistics of per-prompt latent MSE."""
    per = latent_mse(lat, ref).numpy()
    top = np.sort(per)[::-1]
    return {"mean": float(per.mean()), "median": float(np.median(per)), "p90": float(np.quantile(per, 0.9)),
            "max": float(per.max()), "top5_share": float(top[:5].sum() / max(per.sum(), 1e-30)),
            "latent_psnr_db": float(latent_psnr(lat, ref).mean())}


def main(argv: list[str] | None = None) -> int:
    """CLI."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calib", default="calib_prompts/shapes_calib.txt")
    p.add_argument("--num-calib", type=int, default=24)
    p.add_argument("--num-heldout", type=int, default=96)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "fidelity_tail.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model, steps = dc.load_pipeline("tiny"), 20
    pipe = model.pipe
    space = dc.space_of(pipe.transformer)
    calib = read_prompts(a.calib, a.num_calib)
    calls = model.calls(calib[:4], seed=1000, steps=steps)  # the shipped model's defaults = the search's settings
    prof6 = profile_erta(pipe, calls, num_reuse=6, max_consecutive=1)  # as search.validate's sweep
    prof = profile_erta(pipe, calls, num_reuse=10, max_consecutive=2, step_errors=prof6["step_errors"])
    arr = dc.compute_all(space, steps).compute.copy()
    arr[prof["reuse_steps"]] = False
    variants = {"fora-2": dc.fora(space, steps, 2), "erta reuse=10": dc.ERTACacheConfig(prof),
                "erta reuse=10, no corrections": dc.ERTACacheConfig(prof, residual_correction=False,
                                                                     interval_correction=False),
                "static, ERTACache's steps": dc.Schedule(arr, space, {"name": "erta-steps"})}
    sets = {"calibration (search seeds)": (calib, list(range(len(calib)))),
            "held-out (validation seeds)": (heldout_prompts(a.num_heldout), [10_000 + i for i in range(a.num_heldout)])}
    res = {"model": "tiny", "steps": steps, "erta_reuse_steps": prof["reuse_steps"], "sets": {}}
    with torch.inference_mode():
        for name, (prompts, seeds) in sets.items():
            ref, _ = generate(pipe, prompts, seeds, steps)
            res["sets"][name] = {"n": len(prompts), "variants": {}}
            for vname, spec in variants.items():
                lat, speed = generate(pipe, prompts, seeds, steps, spec)
                row = {"macs_speedup": speed, **stats(lat, ref)}
                res["sets"][name]["variants"][vname] = row
                print(f"{name:28s} {vname:30s} {speed:.2f}x mean {row['mean']:.5f} median {row['median']:.5f} "
                      f"max {row['max']:.4f} top-5 share {row['top5_share']:.2f} PSNR {row['latent_psnr_db']:.2f}",
                      flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1) + "\n")
    print("wrote", a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
