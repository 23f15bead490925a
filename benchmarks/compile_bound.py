"""The best wall / MACs any cache could reach on a model, compiled: what the layers outside the blocks cost.

A cache saves block work only. The transformer's other layers (patch and timestep embeddings, caption projection,
final norm and projection) and the denoising loop (scheduler step, CFG combination) run at every step, whatever
is cached. If they cost a larger share of the wall than of the MACs, no cache can turn its MAC speedup into the
same wall speedup. Per model, compiled whole (`fullgraph=True`), generations timed interleaved in one process:

    U         one unhooked 20-step generation (the bare loop of benchmarks/compile.py)
    U_bare    the same with the transformer's blocks removed (its other layers and the loop)
    U_hooked  the same through the hooks of a compute-all schedule (`fora:1`): the hooks' own cost per call is
              (U_hooked − U) / 20
    β         the blocks' share of the MACs (torch's FLOP counter over an eager generation of each)

a cache with MAC speedup s computes a fraction 1/s_b of the block MACs, 1/s = (1 − β) + β/s_b. At best its block
time shrinks as its block MACs do, and nothing else changes (no cache overhead, no cost to read the cache):

    H*(s) = U − (U − U_bare) (1 − 1/s_b)          best possible wall / MACs = U / H*(s) / s

Applied to the hooked rows of compile_auto.json and compile_blocks_midsize.json (their MAC speedups; their
measured wall / MACs are from those runs):

    taskset -c 1 python benchmarks/compile_bound.py            # results/compile_bound.json, the README tables
    python benchmarks/compile_bound.py --table
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

import torch
from compile import STEPS, Runner, build
from hook_overhead import timed

from dit_cache.io import check_out_file, positive_int
from dit_cache.macs import counted_macs

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "compile_bound.json"
MEASURED = ("compile_auto.json", "compile_blocks_midsize.json")  # rows the bound is applied to


def _macs(transformer, latents, text) -> int:
    """MACs of one eager unhooked generation of the benchmark loop (torch's FLOP counter; the loop's scheduler
    and CFG arithmetic hold no matmul, so the ratio of two such counts is the ratio per transformer call)."""
    return counted_macs(Runner(transformer, "model", None, compiled=False).run, latents, text)[1]["full"]


def measure(model: str, repeats: int) -> dict:
    """U, U_bare, U_hooked (median seconds of interleaved generations) and the blocks' MAC share β of `model`."""
    torch.set_num_threads(1)
    transformer, latents, text = build(model)
    bare = copy.deepcopy(transformer)
    bare.transformer_blocks = torch.nn.ModuleList()  # (B, N, D) passes straight to the output layers
    macs_full, macs_bare = _macs(transformer, latents, text), _macs(bare, latents, text)
    runners = {"generation": Runner(transformer, "model", None, compiled=True),
               "bare_generation": Runner(bare, "model", None, compiled=True),
               "hooked_generation": Runner(transformer, "model", "fora:1", compiled=True)}  # compute-all, hooked
    samples: dict[str, list[float]] = {k: [] for k in runners}
    with torch.inference_mode():
        for r in runners.values():  # compile and warm up
            r.run(latents, text)
            r.run(latents, text)
        keys = list(runners)
        for rep in range(repeats):  # interleaved, rotated
            for k in keys[rep % len(keys):] + keys[: rep % len(keys)]:
                samples[k].append(timed(lambda k=k: runners[k].run(latents, text), torch.device("cpu")))
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {"U_s": med["generation"], "U_bare_s": med["bare_generation"], "U_hooked_s": med["hooked_generation"],
            "beta": 1 - macs_bare / macs_full, "macs_call": macs_full, "macs_bare_call": macs_bare,
            "samples_s": samples}


def best_wall_over_mac(m: dict, s: float) -> float:
    """U / H*(s) / s for a cache with MAC speedup s on the model measured in `m`."""
    inv_sb = (1 / s - (1 - m["beta"])) / m["beta"]
    ideal = m["U_s"] - (m["U_s"] - m["U_bare_s"]) * (1 - inv_sb)
    return m["U_s"] / ideal / s


def rows(models: dict) -> list[dict]:
    """Every hooked row of the `MEASURED` JSONs with its best possible wall / MACs."""
    out = []
    for name in MEASURED:
        for r in json.loads((RESULTS / name).read_text())["rows"]:
            if r["variant"] == "unhooked" or r["model"] not in models:
                continue
            out.append({"source": name, "model": r["model"], "scope": r.get("compiled_scope") or r["scope"],
                        "variant": r["variant"], "mac_speedup": r["mac_speedup"],
                        "measured_wall_over_mac": r["compiled_wall_over_mac"],
                        "best_wall_over_mac": best_wall_over_mac(models[r["model"]], r["mac_speedup"])})
    return out


def table(result: dict) -> str:
    """The README tables: per model the costs, then per measured row its bound."""
    lines = ["| model | generation s | without blocks s | its share of the wall | of the MACs "
             "| hooks per call ms (compute-all) |", "|---|---|---|---|---|---|"]
    for model, m in result["models"].items():
        hooks = (m["U_hooked_s"] - m["U_s"]) / STEPS
        lines.append(f"| {model} | {m['U_s']:.3f} | {m['U_bare_s']:.4f} | {100 * m['U_bare_s'] / m['U_s']:.1f} % | "
                     f"{100 * (1 - m['beta']):.2f} % | {1e3 * hooks:.3f} |")
    lines += ["", "| measured in | model | compiled | variant | MACs× | measured wall / MACs | best possible |",
              "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['source']} | {r['model']} | {r['scope']} | {r['variant']} | {r['mac_speedup']:.2f} | "
                     f"{r['measured_wall_over_mac']:.2f} | {r['best_wall_over_mac']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    """Measure each model; write JSON; print the tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=("embedded", "midsize"), default=["embedded", "midsize"])
    p.add_argument("--repeats", type=positive_int, default=15, help="interleaved samples of each measurement")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--table", action="store_true", help="print the README tables from --out and exit")
    args = p.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return
    try:
        check_out_file(args.out)  # before minutes of measuring
    except ValueError as e:
        p.error(str(e))
    start = time.time()
    models = {m: measure(m, args.repeats) for m in args.models}
    result = {"models": models, "rows": rows(models), "steps": STEPS, "repeats": args.repeats, "threads": 1,
              "torch": torch.__version__, "cpu_affinity": sorted(os.sched_getaffinity(0)), "wall_s": time.time() - start}
    args.out.write_text(json.dumps(result, indent=1))
    print(table(result))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
