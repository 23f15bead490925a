"""torch.compile with dit-cache: eager vs compiled x hooked vs unhooked, CPU inductor, pinned to one core.

Two scopes, as users compile:

* ``model``: what `handle.compile(fullgraph=True)` does (scope "auto": the whole transformer, or its blocks for a
  schedule with more than `MANY_STEP_PATTERNS` step patterns; the table names the blocks case) against the whole
  unhooked transformer (``transformer.compile(fullgraph=True)``), for FORA and the shipped learned schedules;
* ``blocks``: every block (`handle.compile_blocks(fullgraph=True)`; unhooked: ``block.compile(fullgraph=True)``)
  for FORA, the learned schedules, TaylorSeer and the block-level dynamic backends (their skip decision stays eager, outside the blocks).

Phase 1 runs each (model, scope, variant) in a fresh subprocess with its own inductor cache dir, so compile times are
cold: the first generation's wall minus a steady one; unique graphs, graph breaks and recompiles (dynamo counters),
host syncs of an eager generation (``aten._local_scalar_dense``), compute speedup by MACs, and the compiled output's
max difference from eager. Phase 2 times eager and compiled generations of every variant interleaved and rotated
(A B C..., B C ... A) in one process, medians; a graph compiled during timing is reported. Models: the embedded
``tiny-pixart-shapes`` transformer (hidden 128, 12 blocks, 16x16 latent) and a PixArt-shaped one with hidden 384
(12 blocks, 32x32 latent); a bare CFG-batched DPM-Solver loop (no text encoder, no VAE), 20 steps, fp32.

    taskset -c 1 python benchmarks/compile.py [--repeats 5] [--models embedded midsize]

Every variant runs on the embedded model; the hidden-384 model (slow to compile on one core) runs `MIDSIZE`.

Writes benchmarks/results/compile.json (and the README table, `python benchmarks/compile.py --table`).
``--set block-reuse`` measures the same static schedules with block-residual reuse (``block:`` specs) instead and
writes compile_block_reuse.json: ``taskset -c 1 python benchmarks/compile.py --set block-reuse --models embedded``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from diffusers import DPMSolverMultistepScheduler
from hook_overhead import denoise, timed
from torch.utils._python_dispatch import TorchDispatchMode

import dit_cache as dc
from dit_cache.zoo import ZOO_DIR
from dit_cache.zoo.tiny_random import build_midsize_pixart_transformer

OUT = Path(__file__).parent / "results" / "compile.json"
OUT_BLOCK = OUT.with_name("compile_block_reuse.json")
LEARNED = ZOO_DIR / "schedules" / "tiny-pixart-shapes"
VARIANTS = {  # scope -> {variant: spec (None: unhooked)}
    "model": {"unhooked": None, "fora-2": "fora:2", "fora-4": "fora:4",
              "learned-3.16x": str(LEARNED / "learned-3.16x.json"), "learned-3.81x": str(LEARNED / "learned-3.81x.json")},
    "blocks": {"unhooked": None, "fora-2": "fora:2", "learned-3.16x": str(LEARNED / "learned-3.16x.json"),
               "learned-3.81x": str(LEARNED / "learned-3.81x.json"), "taylorseer-3": "taylorseer:3",
               "first-block-0.2": "first-block:0.2",
               "teacache-0.3": "teacache:0.3", "cg-taylor-0.2": "cg-taylor:0.2", "delta-dit-2": "delta-dit:2"},
}
_BLOCK = {"unhooked": None, "block-fora-2": "block:fora:2", "block-fora-4": "block:fora:4",
          "block-learned-3.16x": f"block:{LEARNED / 'learned-3.16x.json'}",
          "block-learned-3.81x": f"block:{LEARNED / 'learned-3.81x.json'}"}
SETS = {"default": VARIANTS, "block-reuse": {"model": _BLOCK, "blocks": _BLOCK}}  # --set: which variants
MIDSIZE = ("unhooked", "fora-2", "learned-3.16x", "block-fora-2", "block-learned-3.16x")  # the variants timed on the dearer hidden-384 model (slow to compile on one core)
STEPS = 20


def variants_of(model: str, scopes: tuple = tuple(VARIANTS), which: str = "default") -> dict:
    """{scope: {variant: spec}} of the set `which` measured on `model` (every variant on the embedded one)."""
    return {scope: {v: s for v, s in vs.items() if model == "embedded" or v in MIDSIZE}
            for scope, vs in SETS[which].items() if scope in scopes}


def build(model: str, device: str = "cpu", dtype: str = "fp32") -> tuple:
    """(transformer, latents, text) of a benchmark model on `device`, eval mode."""
    if model == "embedded":
        t = dc.zoo.load().transformer
    else:
        t = build_midsize_pixart_transformer(seed=0)
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    t = t.to(device, dt).eval()
    g = torch.Generator().manual_seed(0)
    size = t.config.sample_size
    latents = torch.randn(1, t.config.in_channels, size, size, generator=g).to(device, dt)  # (B, C, H, W)
    text = torch.randn(2, 24, t.config.caption_channels, generator=g).to(device, dt)  # (2B, T, D): uncond + cond
    return t, latents, text


class Runner:
    """One variant: its own transformer copy and scheduler, hooked (or not), eager or compiled."""

    def __init__(self, transformer, scope: str, spec: str | None, compiled: bool, mode: str | None = None) -> None:
        self.t = copy.deepcopy(transformer)
        self.scheduler = DPMSolverMultistepScheduler()
        self.handle = None
        if spec is not None:
            space = dc.space_of(self.t)
            self.handle = dc.accelerate(SimpleNamespace(transformer=self.t, scheduler=self.scheduler),
                                        dc.parse_spec(spec, space, STEPS))
        if compiled:
            self._compile(scope, {"fullgraph": True, "mode": mode})

    def _compile(self, scope: str, kw: dict) -> None:
        if self.handle is not None:
            (self.handle.compile if scope == "model" else self.handle.compile_blocks)(**kw)  # model: scope "auto"
        elif scope == "model":
            self.t.compile(**kw)
        else:
            for block in self.t.transformer_blocks:
                block.compile(**kw)

    def run(self, latents, text) -> torch.Tensor:
        """One 20-step generation."""
        with torch.inference_mode():
            return denoise(self.t, self.scheduler, latents, text, STEPS)

    def compiled_scope(self) -> str | None:
        """What the handle compiled ("model" or "blocks"; None unhooked or eager)."""
        return None if self.handle is None else self.handle.compiled_scope

    def macs_speedup(self) -> float:
        return 1.0 if self.handle is None else self.handle.stats.macs()["speedup"]


class _SyncCounter(TorchDispatchMode):
    """Counts `aten._local_scalar_dense` (what `.item()`, `float(t)`, `bool(t)` dispatch to)."""

    n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.n += 1
        return func(*args, **(kwargs or {}))


def _counts() -> dict:
    from torch._dynamo.utils import counters

    return {"unique_graphs": counters["stats"]["unique_graphs"],
            "graph_breaks": sum(counters["graph_break"].values()),
            "recompiles": sum(v for k, v in counters["recompiles"].items()) if "recompiles" in counters else 0}


def probe(model: str, scope: str, variant: str, device: str, dtype: str, mode: str | None, which: str) -> dict:
    """Phase 1 (in a fresh process): cold compile time, graph counts, syncs, MACs and the eager difference."""
    if device == "cpu":
        torch.set_num_threads(1)
    transformer, latents, text = build(model, device, dtype)
    dev = torch.device(device)
    spec = SETS[which][scope][variant]
    eager = Runner(transformer, scope, spec, compiled=False)
    ref = eager.run(latents, text)
    with torch.no_grad(), _SyncCounter() as sc:  # (under inference_mode the mode does not see `.item()`)
        denoise(eager.t, eager.scheduler, latents, text, STEPS)
    steady_eager = timed(lambda: eager.run(latents, text), dev)
    comp = Runner(transformer, scope, spec, compiled=True, mode=mode)
    first = timed(lambda: comp.run(latents, text), dev)
    after_first = _counts()
    out = comp.run(latents, text).clone()
    steady = timed(lambda: comp.run(latents, text), dev)
    return {"compile_s": first - steady, "first_generation_s": first, "steady_compiled_s": steady,
            "steady_eager_s": steady_eager, **after_first,
            "graphs_after_more_generations": _counts()["unique_graphs"], "host_syncs_per_generation": sc.n,
            "mac_speedup": comp.macs_speedup(), "compiled_scope": comp.compiled_scope(), "max_abs_diff_vs_eager": float((out.float() - ref.float()).abs().max())}


def _probe_all(args: argparse.Namespace, work: Path) -> dict:
    """Phase 1 over every variant, one subprocess each with its own inductor cache dir under `work` (cold
    compiles); rows are checkpointed in work/probes.jsonl, so a rerun with the same --work resumes."""
    rows: dict = {}
    opts = ["--device", args.device, "--dtype", args.dtype, "--set", args.set] + (["--mode", args.mode] if args.mode else [])
    done_file = work / "probes.jsonl"
    done = {tuple(r["key"]): r["row"] for r in map(json.loads, done_file.read_text().splitlines())} if done_file.exists() else {}
    for model in args.models:
        for scope, variants in variants_of(model, args.scopes, args.set).items():
            for variant in variants:
                key = (model, scope, variant, *opts)
                row = done.get(key)
                if row is None:
                    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(work / "cache" / "-".join(key[:3])),
                           "OMP_NUM_THREADS": "1"}
                    res = subprocess.run([sys.executable, __file__, "--probe", model, scope, variant, *opts], env=env,
                                         capture_output=True, text=True, check=False)
                    if res.returncode:
                        raise SystemExit(f"probe {model}/{scope}/{variant} failed:\n{res.stderr[-3000:]}")
                    row = json.loads(res.stdout.strip().splitlines()[-1])
                    with done_file.open("a") as f:
                        f.write(json.dumps({"key": key, "row": row}) + "\n")
                rows.setdefault(model, {}).setdefault(scope, {})[variant] = row
                print(f"{model:8} {scope:6} {variant:16} compile {row['compile_s']:6.1f}s graphs {row['unique_graphs']:2} "
                      f"breaks {row['graph_breaks']} syncs {row['host_syncs_per_generation']} MACx {row['mac_speedup']:.2f}",
                      flush=True)
    return rows


def _time_all(args: argparse.Namespace) -> dict:
    """Phase 2: eager and compiled generations of every variant, interleaved and rotated; medians per model."""
    from torch._dynamo.utils import counters

    if args.device == "cpu":
        torch.set_num_threads(1)
    dev, out = torch.device(args.device), {}
    for model in args.models:
        transformer, latents, text = build(model, args.device, args.dtype)
        runners = {(scope, v, m): Runner(transformer, scope, spec, compiled=m == "compiled", mode=args.mode)
                   for scope, variants in variants_of(model, args.scopes, args.set).items() for v, spec in variants.items()
                   for m in ("eager", "compiled")}
        for key, r in runners.items():  # warm-up: compile every variant once
            r.run(latents, text)
            r.run(latents, text)
            print(f"{model} warm {key}", flush=True)
        graphs = counters["stats"]["unique_graphs"]
        keys = list(runners)
        samples: dict = {k: [] for k in keys}
        for rep in range(args.repeats):
            for k in keys[rep % len(keys):] + keys[: rep % len(keys)]:
                samples[k].append(timed(functools.partial(runners[k].run, latents, text), dev))
            print(f"{model} rep {rep + 1}/{args.repeats}", flush=True)
        out[model] = {"graphs_compiled_while_timing": counters["stats"]["unique_graphs"] - graphs,
                      "median_s": {"/".join(k): statistics.median(s) for k, s in samples.items()},
                      "samples_s": {"/".join(k): s for k, s in samples.items()}}
    return out


def summarize(probes: dict, timing: dict) -> dict:
    """Per model, scope, hooked variant: compiled wall speedup over compiled-unhooked / compute speedup, and the
    compile time over the unhooked compile time."""
    rows = []
    for model, scopes in probes.items():
        med = timing[model]["median_s"]
        for scope, variants in scopes.items():
            base_c, base_e = med[f"{scope}/unhooked/compiled"], med[f"{scope}/unhooked/eager"]
            for v, p in variants.items():
                wall_c, wall_e = base_c / med[f"{scope}/{v}/compiled"], base_e / med[f"{scope}/{v}/eager"]
                rows.append({"model": model, "scope": scope, "variant": v, "compiled_scope": p.get("compiled_scope"),
                             "mac_speedup": p["mac_speedup"],
                             "eager_s": med[f"{scope}/{v}/eager"], "compiled_s": med[f"{scope}/{v}/compiled"],
                             "eager_wall_speedup": wall_e, "compiled_wall_speedup": wall_c,
                             "compiled_wall_over_mac": wall_c / p["mac_speedup"],
                             "compile_s": p["compile_s"],
                             "compile_over_unhooked": p["compile_s"] / variants["unhooked"]["compile_s"],
                             "unique_graphs": p["unique_graphs"], "graph_breaks": p["graph_breaks"],
                             "recompiled_later": p["graphs_after_more_generations"] - p["unique_graphs"],
                             "host_syncs_per_generation": p["host_syncs_per_generation"],
                             "max_abs_diff_vs_eager": p["max_abs_diff_vs_eager"]})
    return {"rows": rows}


def table(rows: list[dict]) -> str:
    """The README table (markdown)."""
    head = ("| model | scope | variant | MACs× | eager s | compiled s | compiled wall× | wall / MACs | compile s "
            "| compile / unhooked | graphs | breaks | syncs / gen | max diff |\n|" + "---|" * 14)
    lines = [head]
    for r in rows:
        name = r["variant"] + (" (→ blocks)" if r["scope"] == "model" and r.get("compiled_scope") == "blocks" else "")
        lines.append(f"| {r['model']} | {r['scope']} | {name} | {r['mac_speedup']:.2f} | {r['eager_s']:.3f} | "
                     f"{r['compiled_s']:.3f} | {r['compiled_wall_speedup']:.2f} | {r['compiled_wall_over_mac']:.2f} | "
                     f"{r['compile_s']:.1f} | {r['compile_over_unhooked']:.2f} | {r['unique_graphs']} | "
                     f"{r['graph_breaks']} | {r['host_syncs_per_generation']} | {r['max_abs_diff_vs_eager']:.1e} |")
    return "\n".join(lines)


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="timed generations per variant and mode")
    p.add_argument("--models", nargs="+", choices=("embedded", "midsize"), default=["embedded", "midsize"])
    p.add_argument("--scopes", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
    p.add_argument("--device", default="cpu", help="cpu or cuda (benchmarks/gpu_check.sh)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--mode", default=None, help="torch.compile mode, e.g. reduce-overhead (CUDA graphs)")
    p.add_argument("--set", choices=tuple(SETS), default="default",
                   help="variants: default (ECAD semantics, dynamic backends) or block-reuse (block:... specs)")
    p.add_argument("--out", type=Path, default=None, help=f"JSON (default {OUT}; --set block-reuse: {OUT_BLOCK.name})")
    p.add_argument("--work", type=Path, default=None, help="phase-1 checkpoints and caches (rerun with it to resume)")
    p.add_argument("--table", action="store_true", help="print the README table from --out and exit")
    p.add_argument("--probe", nargs=3, metavar=("MODEL", "SCOPE", "VARIANT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    args.out = args.out or (OUT if args.set == "default" else OUT_BLOCK)
    return args


def main() -> None:
    """Run both phases; write JSON."""
    args = _parse()
    if args.probe:
        print(json.dumps(probe(*args.probe, args.device, args.dtype, args.mode, args.set)))
        return
    if args.table:
        print(table(json.loads(args.out.read_text())["rows"]))
        return
    start = time.time()
    work = args.work or Path(tempfile.mkdtemp(prefix="dit-cache-compile-"))
    work.mkdir(parents=True, exist_ok=True)
    probes = _probe_all(args, work)
    merged = work / "merged-cache"  # phase 2 warms up from the probes' inductor caches (no second cold compile)
    for d in sorted((work / "cache").glob("*")):
        shutil.copytree(d, merged, dirs_exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(merged)
    timing = _time_all(args)
    result = {**summarize(probes, timing), "set": args.set, "probes": probes, "timing": timing, "steps": STEPS, "dtype": args.dtype,
              "device": args.device, "mode": args.mode, "threads": 1 if args.device == "cpu" else torch.get_num_threads(),
              "torch": torch.__version__, "backend": "inductor", "machine": platform.machine(),
              "cpu_affinity": sorted(os.sched_getaffinity(0)), "wall_s": time.time() - start}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(table(result["rows"]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
