"""Resumable, shardable generation of (prompt, seed) samples under several schedules, for `dit-cache eval`.

Every finished sample is written at once (`samples/<variant>/p00012-s1.npz` with the uint8 image and the final
latent, a `.png` to look at, then a `.json` sidecar that marks it done), so a killed run loses no finished image
and a rerun skips every sample whose sidecar matches the current settings."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from dataclasses import asdict, dataclass, field, is_dataclass
from dataclasses import fields as dc_fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

import dit_cache as dc
from dit_cache.resolve import prompt_kwargs
from eval.fidelity import frames_as_image

__all__ = ["Sample", "Variant", "generate", "load_sample", "run_variant"]


# ----------------------------------------------------------------------------- variants
def _config_digest(config: Any) -> str:
    """Digest of a backend config: its fields (a schedule by its digest), and the bytes of a profile file it names."""
    def value(v: Any) -> Any:
        return v.digest() if isinstance(v, dc.Schedule) else asdict(v) if is_dataclass(v) else v

    fields = {f.name: value(getattr(config, f.name)) for f in dc_fields(config)} if is_dataclass(config) \
        else {"repr": repr(config)}
    blob = json.dumps({"type": type(config).__name__, **fields}, sort_keys=True, default=str).encode()
    profile = fields.get("profile")
    if isinstance(profile, (str, Path)) and Path(profile).is_file():
        blob += Path(profile).read_bytes()
    return hashlib.sha256(blob).hexdigest()[:20]


@dataclass
class Variant:
    """One column of the evaluation: the uncached baseline (schedule None), a static schedule or a backend
    config (a dynamic backend: what it computes is known only after a run, from the handle's counters)."""

    id: str
    schedule: Any  # dc.Schedule | backend config | None
    source: str = "uncached"

    @property
    def static(self) -> bool:
        """A static schedule (or the baseline): MACs are the same for every batch."""
        return self.schedule is None or isinstance(self.schedule, dc.Schedule)

    @property
    def digest(self) -> str:
        """Schedule / config digest ('uncached' for the baseline)."""
        if self.schedule is None:
            return "uncached"
        return self.schedule.digest() if self.static else _config_digest(self.schedule)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (compute_fraction None for a dynamic backend: see the row's measured one)."""
        if self.schedule is None:
            return {"id": self.id, "source": self.source, "compute_fraction": 1.0, "digest": self.digest}
        if not self.static:
            return {"id": self.id, "source": self.source, "name": self.id, "digest": self.digest,
                    "backend": type(self.schedule).__name__, "compute_fraction": None}
        return {"id": self.id, "source": self.source, "name": self.schedule.name, "digest": self.digest,
                "compute_fraction": self.schedule.compute_fraction(), "steps": self.schedule.steps}


# ----------------------------------------------------------------------------- samples on disk
@dataclass(frozen=True)
class Sample:
    """One (prompt, seed) pair; `seed` is the generator seed used for it."""

    index: int
    seed_index: int
    prompt: str
    seed: int

    @property
    def stem(self) -> str:
        return f"p{self.index:05d}-s{self.seed_index}"


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def _settings_key(settings: dict[str, Any], variant: Variant, sample: Sample) -> str:
    blob = json.dumps({**settings, "variant": variant.digest, "prompt": sample.prompt, "seed": sample.seed},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _sidecar(root: Path, variant: Variant, sample: Sample) -> Path:
    return root / "samples" / variant.id / f"{sample.stem}.json"


def _done(root: Path, settings: dict, variant: Variant, sample: Sample) -> dict | None:
    side = _sidecar(root, variant, sample)
    if not side.is_file():
        return None
    try:
        rec = json.loads(side.read_text())
    except json.JSONDecodeError:
        return None
    ok = rec.get("key") == _settings_key(settings, variant, sample) and _readable(side.with_suffix(".npz"))
    return rec if ok else None


def _readable(npz: Path) -> bool:
    """The sample's npz exists and opens with an image in it (a truncated or damaged file: not done, so a
    rerun regenerates it instead of failing on it)."""
    import zipfile

    try:
        with np.load(npz, allow_pickle=False) as z:
            return "image" in z.files
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def load_sample(root: Path, variant_id: str, stem: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 image (3, H, W) and final latent (or None) of one finished sample."""
    with np.load(root / "samples" / variant_id / f"{stem}.npz", allow_pickle=False) as z:
        img = torch.from_numpy(z["image"])
        lat = torch.from_numpy(z["latent"]) if "latent" in z.files else None
    return img, lat


# ----------------------------------------------------------------------------- generation
def _run_pipe(pipe, prompts: list[str], seeds: list[int], kwargs: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (N, 3, H, W) float in [0, 1] and final latents (N, ...) if the pipeline exposes them."""
    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]  # fixed noise per sample, any batching
    final: dict[str, torch.Tensor] = {}
    params = inspect.signature(type(pipe).__call__).parameters
    extra: dict[str, Any] = {}
    if "callback_on_step_end" in params:
        def on_end(_pipe, _i, _t, cb_kwargs):
            final["latents"] = cb_kwargs["latents"]
            return cb_kwargs

        extra = {"callback_on_step_end": on_end, "callback_on_step_end_tensor_inputs": ["latents"]}
    elif "callback" in params:
        extra = {"callback": lambda _i, _t, lat: final.__setitem__("latents", lat), "callback_steps": 1}
    kw = dict(kwargs)
    if isinstance(kw.get("negative_prompt"), str):  # one per image: FLUX would run a single one broadcast over the
        kw["negative_prompt"] = [kw["negative_prompt"]] * len(prompts)  # batch (MACs per image batch-dependent)
    res = pipe(**prompt_kwargs(pipe, prompts), generator=gens, output_type="pt", **kw, **extra)
    out = frames_as_image(res.frames) if hasattr(res, "frames") else res.images  # video: frames stacked along H
    lat = final.get("latents")
    return out.float().cpu(), (lat.detach().float().cpu() if lat is not None else None)


def run_variant(pipe, variant: Variant, prompts: list[str], seeds: list[int], kwargs: dict,
                count_macs: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, dict | None]:
    """Generate one batch under `variant` (hooks installed for the call only); MACs per image if asked (and,
    for a dynamic backend, the measured compute fraction)."""
    sched = variant.schedule
    if sched is None and count_macs:  # compute-all hooks are bit-identical to no hooks; they count MACs
        sched = dc.compute_all(dc.space_of(pipe.transformer), kwargs["num_inference_steps"])
    handle = dc.accelerate(pipe, sched) if sched is not None else None
    try:
        with torch.inference_mode():
            images, latents = _run_pipe(pipe, prompts, seeds, kwargs)
        macs = None
        if handle is not None and count_macs:
            m = handle.stats.macs()
            macs = {"executed": m["executed"] / len(prompts), "full": m["full"] / len(prompts)}
            if not variant.static:
                macs["compute_fraction"] = handle.stats.compute_fraction()
    finally:
        if handle is not None:
            handle.remove()
    return images, latents, macs


@dataclass
class GenerationResult:
    """Sidecar records of the samples this process owns (all variants), and what it had to generate."""

    records: list[dict] = field(default_factory=list)
    generated: int = 0
    skipped: int = 0


def generate(pipe, variants: list[Variant], samples: list[Sample], root: Path, settings: dict, kwargs: dict,
             batch_size: int = 4, progress: bool = True, desc: str = "generating") -> GenerationResult:
    """Generate every (variant, sample) not already on disk, variants interleaved batch by batch."""
    import time

    from tqdm.auto import tqdm

    res = GenerationResult()
    macs: dict[str, dict] = {}
    for v in variants:  # MACs per image from an earlier run, so a resumed run need not recount
        for s in samples:
            rec = _done(root, settings, v, s)
            if rec is not None and rec.get("macs"):
                macs.setdefault(v.id, rec["macs"])
    total = len(variants) * len(samples)
    with tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
        for b in range(0, len(samples), batch_size):
            batch = samples[b: b + batch_size]
            for v in variants:
                todo = [s for s in batch if _done(root, settings, v, s) is None]
                bar.update(len(batch) - len(todo))
                res.skipped += len(batch) - len(todo)
                if not todo:
                    continue
                t0 = time.perf_counter()
                # a dynamic backend's decisions (so its MACs) depend on the batch: counted on every batch
                images, latents, m = run_variant(pipe, v, [s.prompt for s in todo], [s.seed for s in todo], kwargs,
                                                 count_macs=v.id not in macs or not v.static)
                dt = (time.perf_counter() - t0) / len(todo)
                if m is not None:
                    macs[v.id] = m
                folder = root / "samples" / v.id
                folder.mkdir(parents=True, exist_ok=True)
                for j, s in enumerate(todo):
                    _write_sample(folder, s, images[j], None if latents is None else latents[j])
                    rec = {"variant": v.id, "stem": s.stem, "index": s.index, "seed_index": s.seed_index,
                           "prompt": s.prompt, "seed": s.seed, "key": _settings_key(settings, v, s),
                           "macs": macs.get(v.id), "generation_s_per_image": dt}
                    _atomic_write(folder / f"{s.stem}.json", lambda p, r=rec: p.write_text(json.dumps(r, indent=1)))
                res.generated += len(todo)
                bar.update(len(todo))
                bar.set_postfix_str(v.id)
    for v in variants:
        for s in samples:
            rec = _done(root, settings, v, s)
            if rec is None:
                raise RuntimeError(f"sample {s.stem} of {v.id} is missing after generation")
            rec["macs"] = rec.get("macs") or macs.get(v.id)
            res.records.append(rec)
    return res


def _write_sample(folder: Path, s: Sample, image: torch.Tensor, latent: torch.Tensor | None) -> None:
    """npz (uint8 image (3, H, W), float32 latent) and a png, each written atomically."""
    from PIL import Image

    u8 = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()  # (3, H, W)
    arrays = {"image": u8} if latent is None else {"image": u8, "latent": latent.numpy().astype(np.float32)}

    def save_npz(p: Path) -> None:
        with p.open("wb") as f:
            np.savez(f, **arrays)

    _atomic_write(folder / f"{s.stem}.npz", save_npz)
    _atomic_write(folder / f"{s.stem}.png", lambda p: Image.fromarray(u8.transpose(1, 2, 0)).save(p, format="PNG"))
