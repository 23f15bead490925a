"""Scoring for `dit-cache eval`: which metrics can run, every metric per schedule, and the report files."""

from __future__ import annotations

import platform
import shlex
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import EvalConfig
from .generate import Sample, Variant, load_sample
from .metrics import MetricUnavailable

METRICS = ("fidelity", "latency", "fid", "clip", "adherence")


@dataclass
class Scorers:
    """What can be scored in this run, and why anything requested is left out."""

    metrics: set[str]
    notes: list[str]
    fid_feature: Any = None
    fid_kind: str | None = None
    clip: Any = None
    lpips_ok: bool = False


def setup_scorers(cfg: EvalConfig, is_shapes: bool, prompts: list[str], device: str = "cpu") -> Scorers:
    """Check every requested metric before generating; explicit requests that cannot run raise `MetricUnavailable`."""
    from . import metrics as M

    auto = cfg.metrics == "auto"
    wanted = set(METRICS) if auto else {m.strip() for m in cfg.metrics.split(",") if m.strip()}
    unknown = wanted - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {list(METRICS)} (MACs are always reported)")
    sc = Scorers(set(), [])

    def unavailable(name: str, why: str) -> None:
        if not auto:
            raise MetricUnavailable(f"{name}: {why}")
        sc.notes.append(f"{name} skipped: {why}")

    for name in ("fidelity", "latency"):
        if name in wanted:
            sc.metrics.add(name)
    if "fidelity" in wanted:
        try:
            M.lpips(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
            sc.lpips_ok = True
        except MetricUnavailable as e:
            sc.notes.append(f"LPIPS skipped: {e}")
    if "fid" in wanted:
        kind = cfg.fid_features if cfg.fid_features != "auto" else ("shapes" if is_shapes else "inception")
        try:
            sc.fid_feature, sc.fid_kind = M.fid_feature_extractor(kind), kind
            sc.metrics.add("fid")
        except MetricUnavailable as e:
            unavailable("fid", str(e))
    pre = cfg.clip_pretrained
    if "clip" in wanted and auto and pre is not None and not Path(pre).is_file() \
            and not M._clip_weights_cached(cfg.clip_model, pre):
        sc.notes.append(f"clip skipped: {cfg.clip_model}/{pre} weights are not cached; ask for it explicitly "
                        "(--metrics ...,clip) to download them, or pass --clip-pretrained FILE")
    elif "clip" in wanted:
        try:
            sc.clip = M.clip_scorer(cfg.clip_model, cfg.clip_pretrained, device)
            sc.metrics.add("clip")
            if cfg.clip_pretrained is None:
                sc.notes.append(f"CLIP {cfg.clip_model} has random weights (--clip-pretrained none): plumbing only")
        except MetricUnavailable as e:
            unavailable("clip", str(e))
    if "adherence" in wanted:
        from .shapes_scorer import WEIGHTS

        if not is_shapes:
            unavailable("adherence", "prompt adherence is scored for the embedded shapes model only (--model tiny)")
        elif not WEIGHTS.is_file():
            unavailable("adherence", f"the shapes scorer weights are missing at {WEIGHTS}")
        elif _real_images(prompts, 8) is None:
            unavailable("adherence", "the prompts are not shapes captions; use --prompts shapes:heldout")
        else:
            sc.metrics.add("adherence")
    return sc


def _load_images(cfg: EvalConfig, variants: list[Variant], samples: list[Sample]) -> tuple[dict, dict]:
    """uint8 images (N, 3, H, W) and final latents (or None) of every variant, in sample order."""
    from tqdm.auto import tqdm

    images, latents = {}, {}
    for v in tqdm(variants, desc="loading images", disable=not cfg.progress):
        loaded = [load_sample(cfg.out, v.id, s.stem) for s in samples]
        images[v.id] = torch.stack([a for a, _ in loaded])  # (N, 3, H, W) uint8
        latents[v.id] = torch.stack([b for _, b in loaded]) if all(b is not None for _, b in loaded) else None
    return images, latents


def _rows(cfg: EvalConfig, device: str, variants: list[Variant], samples: list[Sample], recs: dict, images: dict,
          latents: dict, scorers: Scorers, timings, real: torch.Tensor | None) -> tuple[list[dict], dict]:
    """One row per variant (MACs, generation time, wall time, every quality metric) and per-sample values."""
    from tqdm.auto import tqdm

    prompts = [s.prompt for s in samples]
    base_macs = statistics.fmean(recs["uncached", s.stem]["macs"]["executed"] for s in samples)
    rows, per_sample = [], {}
    for v in tqdm(variants, desc="scoring", disable=not cfg.progress):
        macs = statistics.fmean(recs[v.id, s.stem]["macs"]["executed"] for s in samples)
        row: dict[str, Any] = {**v.describe(), "variant": v.id, "macs_per_image": macs, "macs_per_image_g": macs / 1e9,
                               "macs_speedup": base_macs / macs}
        if row["compute_fraction"] is None:  # a dynamic backend: what its handle counted, over every batch
            fractions = [recs[v.id, s.stem]["macs"].get("compute_fraction") for s in samples]
            row["compute_fraction"] = statistics.fmean(fractions) if None not in fractions else None
        row["generation_s_per_image"] = statistics.fmean(recs[v.id, s.stem]["generation_s_per_image"] for s in samples)
        if timings is not None:
            t = timings[v.id].summary()
            row.update(wall_median_s=t["median_s"], wall_iqr_s=t["iqr_s"], wall_speedup=None,
                       peak_memory_mb=t["peak_memory_bytes"] / 2**20, memory_kind=t["memory_kind"], latency=t)
        quality, ps = _quality(scorers, images[v.id], images["uncached"], latents[v.id], latents["uncached"], prompts,
                               real, device)
        row.update(quality)
        rows.append(row)
        per_sample[v.id] = ps
    if timings is not None:
        for row in rows:
            row["wall_speedup"] = rows[0]["wall_median_s"] / row["wall_median_s"]
    return rows, per_sample


def _notes(cfg: EvalConfig, device: str, scorers: Scorers, n_samples: int, real: torch.Tensor | None,
           timed: bool, random_weights: bool) -> list[str]:
    """The report's notes: skipped metrics, random weights, how wall time and FID were measured."""
    if "fid" in scorers.metrics and n_samples < 2:
        scorers.notes.append("FID skipped: it needs at least 2 samples")
    notes = list(scorers.notes)
    if random_weights:
        notes.insert(0, "random-weight model: the quality numbers exercise the plumbing and mean nothing")
    if timed:
        notes.append(f"wall time: {cfg.latency_repeats} interleaved runs (after {cfg.latency_warmup} warm-up) of a "
                     f"batch of {cfg.latency_batch} (whole pipeline call: text encoder, denoising, VAE decode), timed with "
                     f"{'CUDA events' if torch.device(device).type == 'cuda' else 'perf_counter'}")
    if scorers.fid_kind:
        notes.append(f"FID features: {scorers.fid_kind} ({n_samples} images per set)"
                     + ("; 'real' = the prompts' scenes rendered procedurally" if real is not None else ""))
    return notes


def score_and_write(cfg: EvalConfig, state, device: str, variants: list[Variant], samples: list[Sample],
                    records: list[dict], kwargs: dict, scorers: Scorers, timings, res, *,
                    random_weights: bool = False) -> dict:
    """Load every gathered sample, score each variant against the uncached one, write the report files."""
    from .report import format_table, pareto_plot, write_report

    recs = {(r["variant"], r["stem"]): r for r in records}
    missing = [(v.id, s.stem) for v in variants for s in samples if (v.id, s.stem) not in recs]
    if missing:
        raise RuntimeError(f"{len(missing)} samples were not gathered, e.g. {missing[:3]}; is --out shared by all processes?")
    images, latents = _load_images(cfg, variants, samples)
    prompts = [s.prompt for s in samples]
    real = _real_images(prompts, images["uncached"].shape[-1]) if scorers.fid_kind == "shapes" else None
    rows, per_sample = _rows(cfg, device, variants, samples, recs, images, latents, scorers, timings, real)
    cfg.out.mkdir(parents=True, exist_ok=True)
    notes = _notes(cfg, device, scorers, len(samples), real, timings is not None, random_weights)
    pareto = pareto_plot(rows, cfg.out / "pareto.png")
    grids = [_grid(cfg, variants, samples, images)]
    report = {
        "command": _command_line(cfg), "argv": sys.argv, "config": {**_cfg_dict(cfg), "call_kwargs": kwargs}, "versions": _versions(),
        "machine": _machine(state, device), "num_samples": len(samples),
        "variants": [v.describe() for v in variants], "rows": rows, "per_sample": per_sample, "notes": notes,
        "samples": [{"stem": s.stem, "prompt": s.prompt, "seed": s.seed} for s in samples],
        "generation": {"generated_by_main": res.generated, "skipped_by_main": res.skipped},
        "files": {"pareto": pareto.name if pareto else None, "grids": [g.name for g in grids]},
    }
    paths = write_report(cfg.out, report, pareto, grids)
    if cfg.progress:
        print(format_table(rows))
        print(f"\nwrote {paths['json']}, {paths['md']}, {paths['html']}")
    return report


def _quality(sc: Scorers, img: torch.Tensor, ref: torch.Tensor, lat: torch.Tensor | None, lat_ref: torch.Tensor | None,
             prompts: list[str], real: torch.Tensor | None, device: str) -> tuple[dict, dict]:
    """Quality metrics of uint8 images (N, 3, H, W) against the uncached ones (same seeds): row values, per-sample."""
    from . import metrics as M

    row: dict[str, Any] = {}
    ps: dict[str, list] = {}
    if "fidelity" in sc.metrics:  # the uncached row scores itself: inf dB, SSIM 1, MSE 0 (a sanity check)
        f01, r01 = img.float() / 255, ref.float() / 255
        ps["psnr_db"] = [M.psnr(f01[i: i + 1], r01[i: i + 1]) for i in range(len(img))]
        row["psnr_db"] = M.psnr(f01, r01)
        row["ssim"] = M.ssim(img, ref)
        if sc.lpips_ok:
            row["lpips"] = M.lpips(img, ref)
        if lat is not None and lat_ref is not None:
            ps["latent_mse"] = [M.latent_mse(a, b) for a, b in zip(lat, lat_ref)]
            row["latent_mse"] = M.latent_mse(lat, lat_ref)
    if "fid" in sc.metrics and len(img) >= 2:
        row["fid_vs_uncached"] = M.fid(img, ref, sc.fid_feature, device)
        if real is not None:
            row["fid_vs_real"] = M.fid(img, real, sc.fid_feature, device)
    if "clip" in sc.metrics:
        scores = sc.clip.scores(img, prompts)
        ps["clip_score"] = scores.tolist()
        row["clip_score"] = float(scores.mean())
    if "adherence" in sc.metrics:
        from .shapes_scorer import adherence

        adh = adherence(img, prompts)
        row["adherence"], row["adherence_detail"] = adh["all_correct"], adh
        row["attribute_accuracy"] = sum(adh[k] for k in ("color", "shape", "size", "position")) / 4
    return row, ps


def _real_images(prompts: list[str], size: int) -> torch.Tensor | None:
    """The prompts' scenes rendered procedurally (uint8 (N, 3, size, size)), for FID against 'real' shapes."""
    from training import shapes as S

    try:
        scenes = [S.parse_caption(p) for p in prompts]
    except ValueError:
        return None
    return torch.from_numpy(S.render_batch(scenes, size)).permute(0, 3, 1, 2).contiguous()


def _grid(cfg: EvalConfig, variants: list[Variant], samples: list[Sample], images: dict) -> Path:
    from .grid import image_grid

    rows = samples[: cfg.grid_rows]
    cells = [[images[v.id][j].permute(1, 2, 0).numpy() for v in variants] for j in range(len(rows))]
    labels = [f"{s.prompt} (seed {s.seed})" for s in rows]
    return image_grid(cells, [v.id for v in variants], labels, cfg.out / "grid.png")


def _command_line(cfg: EvalConfig) -> str:
    """The `dit-cache eval` command that reproduces this run, every option spelled out."""
    parts = ["dit-cache", "eval", "--model", cfg.model, "--schedules", *cfg.schedules]
    opts = {"--prompts": cfg.prompts, "--category": cfg.category, "--num-prompts": cfg.num_prompts, "--seeds": cfg.seeds,
            "--seed": cfg.seed, "--steps": cfg.steps, "--guidance-scale": cfg.guidance_scale, "--height": cfg.height,
            "--width": cfg.width, "--metrics": cfg.metrics, "--fid-features": cfg.fid_features,
            "--clip-model": cfg.clip_model, "--clip-pretrained": cfg.clip_pretrained or "none",
            "--repeats": cfg.latency_repeats, "--warmup": cfg.latency_warmup, "--latency-batch": cfg.latency_batch,
            "--batch-size": cfg.batch_size, "--grid-rows": cfg.grid_rows, "--device": cfg.device, "--dtype": cfg.dtype, "--threads": cfg.threads,
            "--out": str(cfg.out)}
    for k, v in opts.items():
        if v is not None:
            parts += [k, str(v)]
    if cfg.resample:
        parts.append("--resample")
    return " ".join(shlex.quote(p) for p in parts)


def _cfg_dict(cfg: EvalConfig) -> dict:
    from dataclasses import asdict

    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("dit-cache", "torch", "diffusers", "transformers", "torchmetrics", "open_clip_torch", "accelerate", "numpy"):
        try:
            out[pkg] = torch.__version__ if pkg == "torch" else version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _machine(state, device: str) -> dict[str, Any]:
    import os

    m: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                         "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
                         "num_processes": state.num_processes}
    if torch.device(device).type == "cuda":
        m["gpu"] = torch.cuda.get_device_name(torch.device(device))
    m["summary"] = f"{m.get('gpu', m['processor'])}, {m['cpu_count']} CPUs, {m['torch_threads']} torch threads, " \
                   f"{m['num_processes']} process(es), {m['platform']}"
    return m
