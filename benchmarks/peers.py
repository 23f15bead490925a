"""dit-cache beside what a user would pick instead: diffusers' cache hooks and cache-dit, on the embedded model.

Same held-out prompts and seeds, 20 steps, for every method; compute by one instrument for all
(`eval.flops.TransformerMacs`: torch's FLOP counter with the attention kernels it misses; on dit-cache's rows it
must equal dit-cache's own MAC count, or the run stops); PSNR of the decoded image vs uncached, latent MSE,
shapes-world adherence; wall time per generation, interleaved and rotated over every method, medians.

Methods (each enabled for one generation, then removed, so no state leaks from one generation to the next):

* dit-cache: every `dit_cache.baselines` point, FORA N=5 and the shipped learned schedules; with separate CFG calls (FLUX
  true CFG) also FORA-4 and the learned schedules at >= 2.5x combined with CFG-branch caching (`COMBINED`);
* diffusers (already a dependency): FirstBlockCache, TaylorSeerCache, MagCache (its own calibration mode, on the
  calibration prompts), PyramidAttentionBroadcast, FasterCache. PixArt's pipeline sets no cache context, so one
  is set here, as a user of these hooks would have to;
* cache-dit (``pip install '.[peers]'``): DBCache F1B0 over thresholds and warm-ups, with and without its
  TaylorSeer calibrator. Missing, it is skipped with a message; so is any peer method that fails on the model.

    python benchmarks/peers.py           # full run (quiet machine): results/peers.json, docs/peers_pareto.png
    python benchmarks/peers.py --quick   # smoke test: 3 prompts, 1 repeat, one setting per peer method, temp output
    python benchmarks/peers.py --table   # the README table from results/peers.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from backends import (
    adherence,
    calib_prompts,
    call,
    decode,
    fidelity,
    load_model,
    save_speedup_plot,
    speedup_axes,
)

import dit_cache as dc
from dit_cache.resolve import parse_model_spec
from dit_cache.zoo import ZOO_DIR
from eval.flops import TransformerMacs

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "peers.json"
PLOT = ROOT / "docs" / "peers_pareto.png"
TARGETS = (2.0, 3.0, 4.0, 5.0)
COMBINED = "+cfg-cache:2:2"  # over a static schedule: the uncond call reconstructed at every 2nd active step
# diffusers' TaylorSeer default patterns ("^transformer_blocks.*attn", fullmatch) match no PixArt module (attn1/attn2):
# the block's attention and feed-forward modules are named explicitly, as our TaylorSeer forecasts them; FLUX's
# modules match the defaults (None)
TAYLORSEER_MODULES: dict[str, list[str] | None] = {"pixart": [r"transformer_blocks\.\d+\.(attn1|attn2|ff)"], "flux": None}
# cache-dit's block adapter per family (cache-dit keys its own by pipeline class name, which the shapes pipelines
# do not have): the block lists and their forward patterns, as cache-dit's adapters for PixArt and FLUX give them
CACHE_DIT_BLOCKS = {"pixart": (("transformer_blocks",), ("Pattern_3",)),
                    "flux": (("transformer_blocks", "single_transformer_blocks"), ("Pattern_1", "Pattern_1"))}


@dataclass(frozen=True)
class Method:
    """One operating point of one library: `enable(pipe)` switches it on and returns what has `.remove()` (for
    dit-cache the handle, whose `.stats` the instrument is checked against)."""

    library: str
    name: str
    setting: str
    enable: Callable[[Any], Any]


# -- dit-cache ---------------------------------------------------------------------------------------
def our_specs(steps: int, num_blocks: int, model: str, separate_cfg: bool = False) -> list[tuple[str, str, str]]:
    """(method, setting, spec) of our rows: every `dit_cache.baselines` point, FORA N=5 and the learned schedules
    shipped for `model`; with `separate_cfg`, FORA-4 and the learned schedules at >= 2.5x under CFG-branch caching
    too (`COMBINED`)."""
    specs = [(b.backend, b.spec) for b in dc.baselines(steps, num_blocks, separate_cfg=separate_cfg)]
    specs.append(("fora", "fora:5"))  # the static point past 4x (the baselines' FORA stops at N=4, < 4x)
    zoo_name = parse_model_spec(model).zoo_name
    folder = ZOO_DIR / "schedules" / (zoo_name or "-")
    learned = sorted(folder.glob("*.json")) if zoo_name else []
    specs += [("learned", str(p)) for p in learned]
    if separate_cfg:
        fast = [p for p in learned if float(dc.Schedule.load(p).metadata.get("macs_speedup", 0)) >= 2.5]
        specs += [("fora+cfg-cache", "fora:4" + COMBINED)] + [("learned+cfg-cache", f"{p}{COMBINED}") for p in fast]
    return [(method, spec.replace(f"{folder}/", "").replace(".json", ""), spec) for method, spec in specs]


def ours(pipe: Any, steps: int, profiles: dict[str, Any], model: str, separate_cfg: bool = False) -> list[Method]:
    """Our rows (`our_specs`) as methods; the profiled specs name `profiles`."""
    space = dc.space_of(pipe.transformer)
    out = []
    for method, setting, spec in our_specs(steps, space.shape[0], model, separate_cfg):
        value = dc.resolve_spec(spec, space, steps, profiles=profiles).value
        out.append(Method("dit-cache", method, setting, lambda p, v=value: dc.accelerate(p, v)))
    return out


# -- diffusers' hooks --------------------------------------------------------------------------------
def _hook_names(module: torch.nn.Module) -> set[tuple[str, str]]:
    """(submodule path, hook name) of every diffusers hook under `module`."""
    return {(path, name) for path, m in module.named_modules()
            if (reg := getattr(m, "_diffusers_hook", None)) is not None for name in reg.hooks}


TIMESTEP_SCALE = {"FluxTransformer2DModel": 1000}  # transformers called with t / 1000 (they scale it back inside)


def _diffusers(apply: str, make_config: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Enabler of `diffusers.hooks.<apply>(transformer, make_config(timestep_reader))`, with a cache context set
    (PixArt's pipeline sets none) and a timestep reader for the hooks that ask for one."""

    def enable(pipe: Any) -> Any:
        import diffusers.hooks as dh
        from diffusers.hooks.hooks import CacheContext, HookRegistry, _set_cache_context

        t = pipe.transformer
        now, scale = {"t": 1000}, TIMESTEP_SCALE.get(type(t).__name__, 1)
        reader = t.register_forward_pre_hook(
            lambda _m, _a, kw: now.update(t=int(float(kw["timestep"].flatten()[0]) * scale)), with_kwargs=True)
        before = _hook_names(t)
        getattr(dh, apply)(t, make_config(lambda: now["t"]))
        # the apply_* functions leave the transformer's cached list of child registries stale (it still lists an
        # earlier method's hooks): rebuild it, or the new hooks never receive the context
        HookRegistry.check_if_exists_or_initialize(t).invalidate_child_registries_cache()
        _set_cache_context(t, CacheContext("cond_uncond"))
        if not _hook_names(t) - before:  # e.g. TaylorSeer's default patterns match no PixArt module
            reader.remove()
            raise RuntimeError(f"diffusers' {apply} hooked no module of {type(t).__name__}")

        def remove() -> None:
            reader.remove()
            for path, name in sorted(_hook_names(t) - before, reverse=True):
                t.get_submodule(path)._diffusers_hook.remove_hook(name, recurse=False)
            HookRegistry.check_if_exists_or_initialize(t).invalidate_child_registries_cache()

        return SimpleNamespace(remove=remove)

    return enable


def diffusers_mag_ratios(pipe: Any, calls: list[dict], steps: int) -> list[float]:
    """diffusers' MagCache calibration (`calibrate=True`, the ratios it prints), averaged over `calls`."""
    from diffusers.hooks import MagCacheConfig

    enable = _diffusers("apply_mag_cache", lambda _: MagCacheConfig(calibrate=True, num_inference_steps=steps))
    runs = []
    for kw in calls:
        on, buf = enable(pipe), io.StringIO()
        try:
            with contextlib.redirect_stdout(buf), torch.no_grad():
                pipe(**kw)
        finally:
            on.remove()
        found = re.findall(r"\[([-0-9.eE, ]+)\]", buf.getvalue())
        if not found:
            raise RuntimeError(f"diffusers' MagCache calibration printed no ratios:\n{buf.getvalue()[-500:]}")
        runs.append([float(x) for x in found[-1].split(",")])
    return [statistics.mean(col) for col in zip(*runs)]


def diffusers_methods(steps: int, mag_ratios: list[float] | None, family: str) -> list[Method]:
    """diffusers' cache hooks over their main knob."""
    import diffusers.hooks as dh

    m = [Method("diffusers", "FirstBlockCache", f"threshold {t}",
                _diffusers("apply_first_block_cache", lambda _, t=t: dh.FirstBlockCacheConfig(threshold=t)))
         for t in (0.05, 0.1, 0.2, 0.4, 0.6, 1.0)]
    m += [Method("diffusers", "TaylorSeerCache", f"interval {n}, order 1, warm-up 3",
                 _diffusers("apply_taylorseer_cache", lambda _, n=n: dh.TaylorSeerCacheConfig(
                     cache_interval=n, disable_cache_before_step=3, max_order=1, taylor_factors_dtype=torch.float32,
                     cache_identifiers=TAYLORSEER_MODULES[family])))
          for n in (2, 3, 4, 6)]
    if mag_ratios is not None:
        m += [Method("diffusers", "MagCache", f"threshold {t}, max skips {k}",
                     _diffusers("apply_mag_cache", lambda _, t=t, k=k: dh.MagCacheConfig(
                         threshold=t, max_skip_steps=k, num_inference_steps=steps, mag_ratios=mag_ratios)))
              for t, k in ((0.06, 3), (0.12, 3), (0.25, 3), (0.5, 4))]
    m += [Method("diffusers", "PyramidAttentionBroadcast", f"self-attn every {n}, cross every {n + 2}",
                 _diffusers("apply_pyramid_attention_broadcast", lambda now, n=n: dh.PyramidAttentionBroadcastConfig(
                     spatial_attention_block_skip_range=n, cross_attention_block_skip_range=n + 2,
                     spatial_attention_timestep_skip_range=(100, 900), cross_attention_timestep_skip_range=(100, 900),
                     current_timestep_callback=now)))
          for n in (2, 3, 4)]
    m.append(Method("diffusers", "FasterCache", "defaults (image: BCHW)", _diffusers(
        "apply_faster_cache", lambda now: dh.FasterCacheConfig(
            tensor_format="BCHW", current_timestep_callback=now, attention_weight_callback=lambda _: 0.5))))
    return m


# -- cache-dit ---------------------------------------------------------------------------------------
def _module_order(t: torch.nn.Module) -> dict[str, list[str]]:
    """Child order of every module (cache-dit reorders `transformer._modules` during forward)."""
    return {path: list(m._modules) for path, m in t.named_modules()}


def _reorder(t: torch.nn.Module, order: dict[str, list[str]]) -> None:
    """Put every module's children back in `order`."""
    for path, names in order.items():
        m = t.get_submodule(path)
        m._modules = {n: m._modules[n] for n in names}


def _cache_dit(steps: int, calibrate: bool, family: str, **db: Any) -> Callable[[Any], Any]:
    """Enabler of cache-dit's DBCache (optionally with its TaylorSeer calibrator) on the pipeline."""

    def enable(pipe: Any) -> Any:
        import cache_dit

        calibrator = cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=1) if calibrate else None
        names, patterns = CACHE_DIT_BLOCKS[family]
        blocks = [getattr(pipe.transformer, n) for n in names]
        pats = [getattr(cache_dit.ForwardPattern, p) for p in patterns]
        adapter = cache_dit.BlockAdapter(pipe=pipe, transformer=pipe.transformer,
                                         blocks=blocks if len(blocks) > 1 else blocks[0],
                                         forward_pattern=pats if len(pats) > 1 else pats[0], check_forward_pattern=True)
        order = _module_order(pipe.transformer)
        with contextlib.redirect_stdout(io.StringIO()):
            cache_dit.enable_cache(adapter, cache_config=cache_dit.DBCacheConfig(num_inference_steps=steps, **db),
                                   calibrator_config=calibrator)
        on = SimpleNamespace(reordered=False)

        def remove() -> None:
            cache_dit.disable_cache(adapter)
            on.reordered = _module_order(pipe.transformer) != order
            _reorder(pipe.transformer, order)  # else later methods see another model (profile fingerprints differ)

        on.remove = remove
        return on

    return enable


def cache_dit_methods(steps: int, family: str) -> list[Method]:
    """cache-dit's DBCache F1B0 over thresholds and warm-ups, then with its TaylorSeer calibrator."""
    m = [Method("cache-dit", "DBCache F1B0", f"threshold {r}, warm-up {w}",
                _cache_dit(steps, False, family, Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=r,
                           max_warmup_steps=w))
         for w in (2, 4) for r in (0.1, 0.2, 0.4, 0.6, 1.0)]
    m += [Method("cache-dit", "DBCache F1B0 + TaylorSeer", f"threshold {r}, warm-up 2, order 1",
                 _cache_dit(steps, True, family, Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=r,
                            max_warmup_steps=2))
          for r in (0.2, 0.4, 0.6, 1.0)]
    return m


def peer_methods(pipe: Any, steps: int, calls: list[dict], family: str) -> list[Method]:
    """diffusers' and cache-dit's methods; a library that is missing or fails to calibrate is skipped, said."""
    try:
        ratios = diffusers_mag_ratios(pipe, calls, steps)
    except Exception as e:  # a peer's failure is reported, not ours to fix
        print(f"skipped diffusers MagCache: its calibration failed ({type(e).__name__}: {e})")
        ratios = None
    methods = diffusers_methods(steps, ratios, family)
    os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "error")  # read at import: else several log lines per enable
    try:
        import cache_dit  # noqa: F401
    except ImportError:
        print("skipped cache-dit: not installed (pip install '.[peers]')")
        return methods
    return methods + cache_dit_methods(steps, family)


# -- measurement -------------------------------------------------------------------------------------
def generate(pipe: Any, base: dict, prompts: list[str], seeds: list[int], method: Method | None) -> dict[str, Any]:
    """Latents of every (prompt, seed) with `method` enabled for each generation (None = uncached) and the
    transformer MACs the instrument counted; on dit-cache's rows the instrument must equal the handle's count."""
    lat, macs, own, reordered = [], 0, 0, False
    for p in prompts:
        for s in seeds:
            on = method.enable(pipe) if method else None
            try:
                with TransformerMacs(pipe.transformer) as counter, torch.no_grad():
                    lat.append(pipe(**call(base, p, s)).images)
                own += on.stats.macs()["executed"] if hasattr(on, "stats") else 0
            finally:
                if on is not None:
                    on.remove()
                    reordered |= getattr(on, "reordered", False)
            macs += counter.macs
    if method is not None and method.library == "dit-cache" and own != macs:
        raise SystemExit(f"the instrument counted {macs} MACs for {method.setting}, dit-cache {own}: fix eval/flops.py")
    return {"latents": torch.cat(lat), "macs": macs, "reordered_modules": reordered}


def wall_times(pipe: Any, base: dict, methods: list[Method | None], repeats: int) -> list[list[float]]:
    """Seconds per generation of each method (index 0 = uncached), interleaved and rotated per repeat; enabling
    and removing are outside the timed call."""
    times: list[list[float]] = [[] for _ in methods]
    n = len(methods)
    for r in range(repeats):
        for j in range(n):
            i = (j + r) % n
            on = methods[i].enable(pipe) if methods[i] else None
            start = time.perf_counter()
            with torch.no_grad():
                pipe(**call(base, "timing prompt", 0))
            times[i].append(time.perf_counter() - start)
            if on is not None:
                on.remove()
        print(f"timing repeat {r + 1}/{repeats}", flush=True)
    return times


def _fingerprint(t: torch.nn.Module) -> tuple:
    """What `remove()` must restore: module order (cache-dit reorders `_modules` in forward) and hooks left."""
    return tuple(n for n, _ in t.named_modules()), tuple(sorted(_hook_names(t)))


def _restored(pipe: Any, base: dict, ref: torch.Tensor, call_of: tuple[str, int], before: tuple, m: Method) -> bool:
    """Whether the model is as before `m` (False: module order or hooks changed); an uncached output that
    changed stops the run, since every later row would be measured on a different model."""
    again = generate(pipe, base, [call_of[0]], [call_of[1]], None)["latents"]
    if not torch.equal(again, ref):
        raise SystemExit(f"after {m.library} {m.name} ({m.setting}) the uncached model generates differently: "
                         "its removal left state behind; rerun without it")
    return _fingerprint(pipe.transformer) == before


def measure(pipe: Any, base: dict, prompts: list[str], seeds: list[int], methods: list[Method]) -> list[dict]:
    """The uncached row, then one row per method that runs (a peer method that fails is skipped, said); after
    each, the uncached model is checked to be unchanged (`restores_model`)."""
    ref = generate(pipe, base, prompts, seeds, None)
    ref_img, before = decode(pipe, ref["latents"]), _fingerprint(pipe.transformer)
    rows = [{"library": "uncached", "method": "uncached", "setting": "-", "macs_speedup": 1.0, "psnr": 100.0,
             "latent_mse": 0.0, "adherence": adherence(pipe, ref["latents"], prompts, seeds), "_method": None}]
    for m in methods:
        try:
            r = generate(pipe, base, prompts, seeds, m)
        except SystemExit:
            raise
        except Exception as e:  # a peer's failure on this model is reported, not ours to fix
            if m.library == "dit-cache":
                raise
            print(f"skipped {m.library} {m.name} ({m.setting}): {type(e).__name__}: {str(e)[:200]}")
            continue
        row = {"library": m.library, "method": m.name, "setting": m.setting, "macs_speedup": ref["macs"] / r["macs"],
               **fidelity(pipe, r["latents"], ref["latents"], ref_img),
               "adherence": adherence(pipe, r["latents"], prompts, seeds),
               "restores_model": _restored(pipe, base, ref["latents"][:1], (prompts[0], seeds[0]), before, m)
               and not r["reordered_modules"],
               "_method": m}
        rows.append(row)
        print(f"{m.library:9s} {m.name:26s} {m.setting:34s} MACs x{row['macs_speedup']:.2f}  PSNR {row['psnr']:.2f}",
              flush=True)
    return rows


# -- report ------------------------------------------------------------------------------------------
def winners(rows: list[dict], targets: tuple[float, ...] = TARGETS) -> dict[str, dict[str, dict | None]]:
    """Per target speedup and library: the best-PSNR row at >= that MACs speedup (None: the library never gets
    there), and which library leads."""
    out: dict[str, dict[str, dict | None]] = {}
    libs = [lib for lib in dict.fromkeys(r["library"] for r in rows) if lib != "uncached"]
    for t in targets:
        best = {lib: max((r for r in rows if r["library"] == lib and r["macs_speedup"] >= t),
                         key=lambda r: r["psnr"], default=None) for lib in libs}
        out[f">={t:g}x"] = {lib: None if r is None else {k: r[k] for k in _KEEP if k in r} for lib, r in best.items()}
    return out


_KEEP = ("method", "setting", "macs_speedup", "wall_speedup", "psnr", "latent_mse", "adherence")


def leader(win: dict[str, dict | None]) -> str | None:
    """The library with the best PSNR among those reaching the target."""
    got = {lib: r["psnr"] for lib, r in win.items() if r is not None}
    return max(got, key=got.__getitem__) if got else None


def table(report: dict) -> str:
    """The README table: each library's best at every target of `TARGETS` (>= 2x, 3x, 4x, 5x MACs speedup)."""
    lines = ["| MACs speedup | library | best method (setting) | MACs× | wall× | PSNR (dB) | all-correct |",
             "|" + "---|" * 7]
    unc = report["uncached_all_correct"]
    for target, win in winners(report["rows"]).items():  # from the rows: every target of TARGETS
        for lib, r in win.items():
            if r is None:
                lines.append(f"| {target} | {lib} | — (never reaches it) | | | | |")
                continue
            lead = " **(best)**" if lib == leader(win) else ""
            lines.append(f"| {target} | {lib}{lead} | {r['method']} ({r['setting']}) | {r['macs_speedup']:.2f} | "
                         f"{r['wall_speedup']:.2f} | {r['psnr']:.1f} | {r['adherence']['all_correct']:.2f} |")
    lines.append(f"\nUncached all-correct: {unc:.2f}.")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    """MACs speedup vs PSNR: every point, and each library's front (best PSNR at >= each speedup)."""
    fig, ax = speedup_axes((7.5, 4.8))
    for lib, colour in (("dit-cache", "tab:blue"), ("diffusers", "tab:orange"), ("cache-dit", "tab:green")):
        pts = sorted((r["macs_speedup"], r["psnr"]) for r in rows if r["library"] == lib)
        if not pts:
            continue
        front, best = [], -1.0
        for x, y in reversed(pts):
            if y > best:
                front.append((x, y))
                best = y
        ax.scatter(*zip(*pts), s=14, alpha=0.45, color=colour)
        ax.plot(*zip(*sorted(front)), marker="o", color=colour, label=f"{lib} (front)", drawstyle="steps-post")
    save_speedup_plot(fig, ax, path, title, "MACs speedup (x), one FLOP counter for all")


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke test: 3 prompts, 1 repeat, one setting per peer method")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--prompts", type=int, default=32, help="held-out prompts of the shapes world")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per prompt")
    ap.add_argument("--calib", type=int, default=8, help="calibration prompts (TeaCache, MagCache: ours and diffusers')")
    ap.add_argument("--repeats", type=int, default=3, help="timing repetitions (interleaved, rotated)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default="tiny", help="tiny (default) or tiny-flux (or a shapes-world pipeline folder)")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"JSON (default {OUT}, for tiny-flux peers_tiny_flux.json; --quick: a temp dir)")
    ap.add_argument("--plot", type=Path, default=None, help=f"Pareto plot (default {PLOT}; --quick: a temp dir)")
    ap.add_argument("--table", action="store_true", help="print the README table from --out and exit")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.calib, args.repeats = 3, 2, 1
        tmp = Path(tempfile.mkdtemp(prefix="dit-cache-peers-"))
        args.out, args.plot = args.out or tmp / "peers.json", args.plot or tmp / "peers_pareto.png"
    suffix = "" if args.model == "tiny" else "_" + re.sub(r"\W+", "_", Path(args.model).name)
    args.out = args.out or OUT.with_name(f"peers{suffix}.json")
    args.plot = args.plot or PLOT.with_name(f"peers_pareto{suffix}.png")
    return args


def _methods(pipe: Any, args: argparse.Namespace, model: str) -> list[Method]:
    """Every method of the run (--quick: two of ours, the first setting of each peer method)."""
    calls = [call(args.base, p, 1000 + i) for i, p in enumerate(calib_prompts(True, args.calib))]
    profiles = dc.resolve.baseline_profiles(pipe, calls, args.steps, model)
    family = dc.space_of(pipe.transformer).family
    if family not in CACHE_DIT_BLOCKS:
        sys.exit(f"peers.py compares on PixArt and FLUX models; {model} is a {family} model")
    separate_cfg = dc.resolve.calls_per_step(pipe, calls[0]) == 2
    mine = ours(pipe, args.steps, profiles, args.model, separate_cfg)
    theirs = peer_methods(pipe, args.steps, calls, family)
    if args.quick:
        mine = [m for m in mine if m.setting in ("fora:2", "learned-3.16x", "learned-3.16x" + COMBINED)]
        theirs = list({(m.library, m.name): m for m in reversed(theirs)}.values())[::-1]  # the first of each method
    return mine + theirs


def main() -> None:
    args = _args()
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return
    torch.set_num_threads(args.threads)
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # FasterCache warns "experimental" on every enable
    start = time.perf_counter()
    pipe, model, args.base, embedded = load_model(args.steps, args.model)
    if not embedded:
        sys.exit(f"peers.py needs a shapes-world model (--model tiny or tiny-flux); {args.model!r} is not one")
    from search.validate import heldout_prompts

    prompts, seeds = heldout_prompts(args.prompts), list(range(args.seeds))
    rows = measure(pipe, args.base, prompts, seeds, _methods(pipe, args, model))
    times = wall_times(pipe, args.base, [r.pop("_method") for r in rows], args.repeats)
    for row, ts in zip(rows, times):
        row["wall_median_s"] = statistics.median(ts)
        row["wall_speedup"] = statistics.median(a / b for a, b in zip(times[0], ts))
    report = {"model": model, "steps": args.steps, "prompts": len(prompts), "seeds": seeds, "split": "heldout",
              "calibration_prompts": args.calib, "timing_repeats": args.repeats, "threads": args.threads,
              "instrument": "eval.flops.TransformerMacs (torch FLOP formulas + missed attention kernels)",
              "versions": _versions(), "device": platform.processor() or platform.machine(), "quick": args.quick,
              "uncached_all_correct": rows[0]["adherence"]["all_correct"], "rows": rows, "winners": winners(rows),
              "wall_s": time.perf_counter() - start}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    plot(rows, args.plot, f"{model}, {args.steps} steps, {len(prompts)} held-out prompts")
    print(table(report))
    print(f"wrote {args.out} and {args.plot}")


def _versions() -> dict[str, str | None]:
    """Versions of the libraries compared."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("dit-cache", "diffusers", "cache-dit", "torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


if __name__ == "__main__":
    main()
