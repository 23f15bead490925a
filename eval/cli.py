"""`dit-cache eval`: generate a prompt set uncached and under each schedule (same seeds), then write a report
with MACs and wall-time speedups, fidelity to the uncached output, FID, CLIP score, adherence and memory.

Multi-process: `accelerate launch --multi_gpu --num_processes N -m dit_cache.cli eval ...` shards the samples
across processes (each writes its images into --out, which must be shared), gathers the records and lets
process 0 time the variants and write the report. Resumable: a rerun skips every finished image."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import dit_cache as dc
from dit_cache.io import OutLock, check_out_dir, nonnegative_int, positive_int
from dit_cache.resolve import MODEL_HELP, load_pipeline, parse_model_spec, resolve_spec

from .config import EvalConfig
from .generate import Sample, Variant, generate
from .score import METRICS, score_and_write, setup_scorers

__all__ = ["EvalConfig", "register", "run_eval"]


# ----------------------------------------------------------------------------- processes
class _Single:
    """Stand-in for accelerate's PartialState when running alone."""

    num_processes, process_index, is_main_process = 1, 0, True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def wait_for_everyone(self) -> None:
        pass


def _state(device: str | None = None):
    """accelerate's PartialState under `accelerate launch`, a single-process stand-in otherwise.

    CPU processes (no CUDA, or --device cpu) use the gloo backend: launch them with
    `accelerate launch --multi_gpu --num_processes N` (accelerate's `--cpu` starts a single process)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _Single()
    try:
        from accelerate import PartialState
    except ImportError:
        raise RuntimeError("multi-process eval needs accelerate: `pip install accelerate`") from None
    cpu = not torch.cuda.is_available() or (device is not None and torch.device(device).type == "cpu")
    return PartialState(cpu=cpu)


def _gather(state, records: list[dict]) -> list[dict]:
    if state.num_processes == 1:
        return records
    from accelerate.utils import gather_object

    return gather_object(records)


# ----------------------------------------------------------------------------- main flow
def _variants(pipe, cfg: EvalConfig) -> list[Variant]:
    """The uncached baseline, then one variant per spec of --schedules (static schedule or backend config)."""
    space = dc.space_of(pipe.transformer)
    out = [Variant("uncached", None)]
    for text in cfg.schedules:
        spec = resolve_spec(text, space, cfg.steps, resample=cfg.resample)
        vid = "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in spec.name)
        while vid in {v.id for v in out}:
            vid += "+"
        out.append(Variant(vid, spec.value, text))
    return out


def _samples(cfg: EvalConfig, prompts: list[str]) -> list[Sample]:
    """Every (prompt, seed) pair; generator seed = seed + 100003 * seed_index + prompt_index."""
    if cfg.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {cfg.seeds}")
    return [Sample(i, k, p, cfg.seed + 100_003 * k + i) for k in range(cfg.seeds) for i, p in enumerate(prompts)]


def _check(cfg: EvalConfig) -> torch.dtype:
    """Validate the numeric settings (before anything is loaded); the torch dtype of --dtype."""
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(cfg.dtype)
    if dtype is None:
        raise ValueError(f"--dtype must be float32, float16 or bfloat16, got {cfg.dtype!r}")
    for name, value in (("--batch-size", cfg.batch_size), ("--repeats", cfg.latency_repeats),
                        ("--latency-batch", cfg.latency_batch), ("--grid-rows", cfg.grid_rows), ("--steps", cfg.steps)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if cfg.latency_warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {cfg.latency_warmup}")
    if cfg.threads is not None:
        if cfg.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {cfg.threads}")
        torch.set_num_threads(cfg.threads)
    return dtype


def run_eval(cfg: EvalConfig) -> dict | None:
    """Run the evaluation; returns the report on the main process (None on the others)."""
    state = _state(cfg.device)
    dtype = _check(cfg)
    check_out_dir(cfg.out, "--out")  # before anything is generated: a bad --out must not cost the run
    lock = OutLock(cfg.out) if state.is_main_process else None  # one run per --out at a time
    try:
        return _run_eval(cfg, state, dtype)
    finally:
        if lock is not None:
            lock.release()


def _run_eval(cfg: EvalConfig, state, dtype: torch.dtype) -> dict | None:
    from .prompts import load_prompts

    device = cfg.device or str(state.device)
    model_spec = parse_model_spec(cfg.model)
    if cfg.prompts is None and not model_spec.shapes and not model_spec.random_weights:
        raise ValueError("pass --prompts FILE (text, PartiPrompts .tsv, ImageReward .json) for this model")
    prompts = load_prompts(cfg.prompts or "shapes:heldout", cfg.num_prompts, category=cfg.category, seed=cfg.seed)
    main = state.is_main_process
    scorers = setup_scorers(cfg, model_spec.shapes, prompts, device) if main else None
    model = load_pipeline(model_spec, device, dtype)
    pipe = model.pipe
    variants = _variants(pipe, cfg)
    samples = _samples(cfg, prompts)
    kwargs = model.call_kwargs(cfg.steps, cfg.guidance_scale, cfg.height, cfg.width)
    settings = {"model": model.name, "kwargs": kwargs, "dtype": cfg.dtype, "device_type": torch.device(device).type}
    mine = samples[state.process_index:: state.num_processes]
    res = generate(pipe, variants, mine, cfg.out, settings, kwargs, cfg.batch_size, cfg.progress and main,
                   desc=f"generating ({state.num_processes} proc)" if state.num_processes > 1 else "generating")
    records = _gather(state, res.records)
    state.wait_for_everyone()
    report = None
    if main:
        timings = _latency(pipe, variants, samples, kwargs, cfg, device) if "latency" in scorers.metrics else None
        report = score_and_write(cfg, state, device, variants, samples, records, kwargs, scorers, timings, res,
                                 random_weights=model.random_weights)
    state.wait_for_everyone()
    return report


def _latency(pipe, variants: list[Variant], samples: list[Sample], kwargs: dict, cfg: EvalConfig, device: str):
    """Interleaved timing of one batch of `latency_batch` samples per variant, hooks installed untimed."""
    from tqdm.auto import tqdm

    from .generate import _run_pipe
    from .latency import time_interleaved

    batch = samples[: cfg.latency_batch]
    prompts, seeds = [s.prompt for s in batch], [s.seed for s in batch]
    by_id = {v.id: v for v in variants}

    def setup(vid: str):
        sched = by_id[vid].schedule
        return dc.accelerate(pipe, sched) if sched is not None else None

    def teardown(_vid: str, handle) -> None:
        if handle is not None:
            handle.remove()

    def call() -> None:
        with torch.inference_mode():
            _run_pipe(pipe, prompts, seeds, kwargs)

    total = (cfg.latency_warmup + cfg.latency_repeats) * len(variants)
    with tqdm(total=total, desc="timing (interleaved)", unit="run", disable=not cfg.progress) as bar:
        return time_interleaved({v.id: call for v in variants}, warmup=cfg.latency_warmup, repeats=cfg.latency_repeats,
                                device=device, setup=setup, teardown=teardown, progress=lambda _n: bar.update())


# ----------------------------------------------------------------------------- argparse
def _cmd(args: argparse.Namespace) -> int:
    cfg = EvalConfig(
        model=args.model, schedules=args.schedules, prompts=args.prompts, category=args.category,
        num_prompts=args.num_prompts, seeds=args.seeds, seed=args.seed, steps=args.steps,
        guidance_scale=args.guidance_scale, height=args.height, width=args.width, metrics=args.metrics,
        out=Path(args.out), batch_size=args.batch_size, resample=args.resample, fid_features=args.fid_features,
        clip_model=args.clip_model, clip_pretrained=None if args.clip_pretrained.lower() == "none" else args.clip_pretrained,
        latency_warmup=args.warmup, latency_repeats=args.repeats, latency_batch=args.latency_batch,
        grid_rows=args.grid_rows, device=args.device, dtype=args.dtype, threads=args.threads, progress=not args.quiet)
    run_eval(cfg)  # bad input (ValueError, MetricUnavailable, ...): one `error:` line from dit_cache.cli.main
    return 0


def register(sub) -> None:
    """Add `dit-cache eval` to the CLI (entry point of the `dit_cache.commands` group)."""
    p = sub.add_parser("eval", help="evaluate schedules: speedup (MACs, wall) vs quality, report with plots and grids",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help=MODEL_HELP)
    p.add_argument("--schedules", nargs="*", default=["fora:2", "fora:3"], metavar="SPEC",
                   help="caching specs (default fora:2 fora:3; the uncached baseline is always included), any of: "
                   + ", ".join(dc.SPEC_KINDS))
    p.add_argument("--prompts", help="prompt file: .txt (one per line, e.g. COCO captions), PartiPrompts .tsv, "
                   "ImageReward .json, or shapes:heldout (default for tiny models)")
    p.add_argument("--category", help="PartiPrompts category filter (e.g. Animals)")
    p.add_argument("--num-prompts", type=positive_int, default=16, help="first N prompts (default 16)")
    p.add_argument("--seeds", type=positive_int, default=1, help="seeds per prompt (default 1)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    p.add_argument("--steps", type=positive_int, default=20, help="denoising steps (default 20)")
    p.add_argument("--resample", action="store_true", help="resample schedule files to --steps instead of failing")
    p.add_argument("--guidance-scale", type=float, help="override the pipeline's guidance scale")
    p.add_argument("--height", type=positive_int)
    p.add_argument("--width", type=positive_int)
    p.add_argument("--metrics", default="auto", help=f"comma list of {','.join(METRICS)}, or auto (default: all that "
                   "can run here, the rest noted); an explicit metric that cannot run is an error")
    p.add_argument("--fid-features", default="auto", choices=["auto", "inception", "shapes", "pixels"],
                   help="FID features: inception (torch-fidelity), shapes (embedded model), pixels (weight-free, "
                   "smoke tests); auto = shapes for tiny, inception otherwise")
    p.add_argument("--clip-model", default="ViT-B-32", help="open_clip model (default ViT-B-32; ViT-L-14 is common too)")
    p.add_argument("--clip-pretrained", default="openai", help="open_clip pretrained tag or local file; 'none' = "
                   "random weights (plumbing only)")
    p.add_argument("--repeats", type=positive_int, default=3, help="timed runs per variant, interleaved (default 3)")
    p.add_argument("--warmup", type=nonnegative_int, default=1, help="untimed warm-up rounds (default 1)")
    p.add_argument("--latency-batch", type=positive_int, default=1, help="images per timed pipeline call (default 1)")
    p.add_argument("--batch-size", type=positive_int, default=4, help="images per pipeline call when generating (default 4)")
    p.add_argument("--grid-rows", type=positive_int, default=8, help="samples shown in the image grid (default 8)")
    p.add_argument("--device", help="torch device (default: the process's accelerator, else cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (1 is fastest for tiny models on a busy machine)")
    p.add_argument("--out", default="eval_out", help="report folder; generated images go to OUT/samples (default eval_out)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    p.set_defaults(func=_cmd)
