"""JSON profiles made offline on calibration prompts (ERTACache, TeaCache), tied to one model and step count."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "dit-cache-profile"
SCHEMA_VERSION = 1


class ProfileError(ValueError):
    """A profile is malformed or was made for another model / step count."""


def model_fingerprint(transformer: nn.Module) -> str:
    """Stable id of a transformer: class, config and a sample of every parameter (first 16 values)."""
    h = hashlib.sha256(type(transformer).__name__.encode())
    config = {k: v for k, v in dict(getattr(transformer, "config", {})).items() if not k.startswith("_")}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            h.update(name.encode() + str(tuple(p.shape)).encode())
            h.update(p.detach().flatten()[:16].float().cpu().numpy().tobytes())
    return h.hexdigest()[:20]


def new_profile(**data: Any) -> dict[str, Any]:
    """A profile dict with the format header (needs backend, family, fingerprint, steps)."""
    return {"format": FORMAT, "schema_version": SCHEMA_VERSION, **data}


def save_profile(data: Mapping[str, Any], path: str | Path) -> Path:
    """Write a profile dict (with format/schema/backend/fingerprint/steps) as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(new_profile(**data), indent=1))
    return path


def load_profile(source: str | Path | Mapping[str, Any], backend: str) -> dict[str, Any]:
    """Read and validate a profile for `backend` from a path or a dict."""
    from ..schedule import read_json

    data = source if isinstance(source, Mapping) else read_json(source, f"{backend} profile", ProfileError)
    where = "the profile" if isinstance(source, Mapping) else str(source)
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where} must be a JSON object, got {type(data).__name__}")
    data = dict(data)
    if data.get("format") != FORMAT:
        raise ProfileError(f"{where} is not a dit-cache profile (format {data.get('format')!r})")
    if data.get("schema_version", 0) > SCHEMA_VERSION:
        raise ProfileError(f"{where} has schema version {data['schema_version']}; this dit-cache reads {SCHEMA_VERSION}")
    if data.get("backend") != backend:
        raise ProfileError(
            f"the profile is for backend {data.get('backend')!r}, not {backend!r}: "
            f"make one with `dit-cache profile --backend {backend} ...`"
        )
    for key in ("fingerprint", "steps", "family"):
        if key not in data:
            raise ProfileError(f"{where} lacks {key!r}: make it again with `dit-cache profile --backend {backend}`")
    n = data["steps"]
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ProfileError(f"{where}: 'steps' must be a whole number >= 1 (or null: any), got {n!r}")
    return data


def is_number(x: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_model(profile: Mapping[str, Any], transformer: nn.Module, backend: str) -> None:
    """Raise if `profile` was made for another model."""
    fp = model_fingerprint(transformer)
    if profile["fingerprint"] != fp:
        raise ProfileError(
            f"this {backend} profile was made for another model (fingerprint {profile['fingerprint']}, "
            f"{profile.get('model', '?')}; this model is {fp}): run `dit-cache profile --backend {backend} "
            "--model <this model> ...` to make one for it"
        )


def check_steps(profile: Mapping[str, Any], steps: int | None, backend: str) -> None:
    """Raise if the generation's step count differs from the profile's."""
    if steps is not None and profile["steps"] is not None and steps != profile["steps"]:
        raise ProfileError(
            f"the {backend} profile was made for {profile['steps']} steps but the pipeline runs {steps}: call it "
            f"with num_inference_steps={profile['steps']} or profile again with --steps {steps}"
        )


def run_calls(pipe: Any, calls: Iterable[Mapping[str, Any]], hook: Callable[[int], None] | None = None) -> int:
    """Run the pipeline once per kwargs dict (no grad, generators copied so passes repeat); `hook(i)` before
    call i. Returns the number of calls."""
    n = 0
    with torch.no_grad():
        for i, kwargs in enumerate(calls):
            if hook is not None:
                hook(i)
            pipe(**{**kwargs, "generator": fresh_generator(kwargs.get("generator"))})
            n += 1
    if n == 0:
        raise ProfileError("no calibration prompts: give at least one")
    return n


def fresh_generator(gen: Any) -> Any:
    """A copy of a torch.Generator in its current state, so that every pass over the calls sees the same noise."""
    if not isinstance(gen, torch.Generator):
        return gen
    g = torch.Generator(gen.device)
    g.set_state(gen.get_state())
    return g


def read_prompts(path: str | Path, limit: int | None = None) -> list[str]:
    """Calibration prompts from a text file, one per line (blank lines and '#' comments skipped)."""
    lines = [ln.strip() for ln in Path(path).read_text().splitlines()]
    prompts = [ln for ln in lines if ln and not ln.startswith("#")]
    if not prompts:
        raise ProfileError(f"{path} has no prompts (one per line expected)")
    return prompts[:limit] if limit else prompts
