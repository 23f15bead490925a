"""Schedules made for 20 steps, run at 10 / 15 / 30 / 50 steps: `Schedule.resample` vs native schedules.

For each step count T: the uncached model at T is the reference; each 20-step schedule (FORA-2/3/4, the
shipped learned schedules) runs resampled to T by `Schedule.resample` and by the nearest-step sampling
earlier versions used (new step j <- old step round(j·19/(T−1)), kept here only as the "before"
baseline); FORA-N built natively at T is the target. Quality = image PSNR and latent PSNR vs uncached on
held-out prompts of the embedded model; compute = MACs speedup counted by the runtime (exact).

    python benchmarks/resample.py [--num-prompts 16] [--out benchmarks/results/resample.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import dit_cache as dc
from eval.fidelity import decode_latents, psnr
from search.objectives import latent_psnr
from search.validate import generate, heldout_prompts

ROOT = Path(__file__).resolve().parents[1]
STEP_COUNTS = (10, 15, 30, 50)


def nearest_step(s: dc.Schedule, steps: int) -> dc.Schedule:
    """The resampling of dit-cache <= 0.1 (aliases periodic schedules), for comparison only."""
    src = np.rint(np.linspace(0, s.steps - 1, steps)).astype(int)
    arr = s.compute[src].copy()
    arr[0] = True
    return dc.Schedule(arr, s.space, {"name": f"{s.name}@nearest{steps}"})


def sources(space: dc.ScheduleSpace) -> list[dc.Schedule]:
    """The 20-step schedules: FORA-2/3/4 and the shipped learned schedules."""
    shipped = sorted((ROOT / "dit_cache/zoo/schedules/tiny-pixart-shapes").glob("*.json"))
    return [dc.fora(space, 20, n) for n in (2, 3, 4)] + [dc.Schedule.load(p) for p in shipped]


def measure(pipe, prompts, seeds, steps, spec, ref_lat, ref_img) -> dict[str, float]:
    """MACs speedup, image PSNR and latent PSNR (dB) of `spec` at `steps` vs the uncached reference."""
    lat, speedup = generate(pipe, prompts, seeds, steps, spec)
    img = decode_latents(pipe, lat)
    return {"macs_speedup": round(speedup, 4), "psnr_db": round(psnr(img, ref_img), 3),
            "latent_psnr_db": round(float(latent_psnr(lat, ref_lat).mean()), 3)}


def rows_at(pipe, space, prompts, seeds, steps: int) -> list[dict]:
    """Every variant at one step count."""
    ref_lat, _ = generate(pipe, prompts, seeds, steps)
    ref_img = decode_latents(pipe, ref_lat)
    natives = {n: dc.fora(space, steps, n) for n in (2, 3, 4, 5, 6)}
    out = []
    for s in sources(space):
        row = {"steps": steps, "schedule": s.name,
               "resampled": measure(pipe, prompts, seeds, steps, s.resample(steps), ref_lat, ref_img),
               "nearest_step": measure(pipe, prompts, seeds, steps, nearest_step(s, steps), ref_lat, ref_img)}
        target = s.resample(steps).compute_fraction()
        n = min(natives, key=lambda k: abs(natives[k].compute_fraction() - target))  # FORA at the nearest MACs
        row["native_fora"] = {"name": f"fora-{n}", **measure(pipe, prompts, seeds, steps, natives[n], ref_lat, ref_img)}
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def table(rows: list[dict]) -> str:
    """Markdown table of the rows."""
    lines = ["| steps | schedule (20 steps) | resampled: MACs ×, PSNR dB | nearest-step (before): MACs ×, PSNR dB | "
             "native FORA at the nearest MACs: MACs ×, PSNR dB |", "|---|---|---|---|---|"]
    for r in rows:
        a, b, c = r["resampled"], r["nearest_step"], r["native_fora"]
        lines.append(f"| {r['steps']} | {r['schedule']} | {a['macs_speedup']:.2f}, {a['psnr_db']:.2f} | "
                     f"{b['macs_speedup']:.2f}, {b['psnr_db']:.2f} | {c['name']}: {c['macs_speedup']:.2f}, {c['psnr_db']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run every step count; write JSON and a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-prompts", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/resample.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    pipe = dc.zoo.load()
    space = dc.space_of(pipe.transformer)
    prompts = heldout_prompts(args.num_prompts)
    seeds = list(range(10_000, 10_000 + len(prompts)))
    rows = [r for steps in STEP_COUNTS for r in rows_at(pipe, space, prompts, seeds, steps)]
    result = {"model": "tiny", "num_prompts": len(prompts), "seeds": seeds[0], "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    Path(args.out).with_suffix(".md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
