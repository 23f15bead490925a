"""Model zoo: small diffusers pipelines shipped with dit-cache (embedded default: `tiny-pixart-shapes`)."""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import FluxPipeline, PixArtAlphaPipeline

__all__ = ["CALL_KWARGS", "DEFAULT_MODEL", "FLUX_CALL_KWARGS", "FLUX_MODEL", "MODELS", "ZOO_DIR",
           "ShapesFluxPipeline", "ShapesPixArtPipeline", "load"]

from ..resolve import EMBEDDED

DEFAULT_MODEL = EMBEDDED["tiny"][0]  # "tiny-pixart-shapes"
FLUX_MODEL = EMBEDDED["tiny-flux"][0]  # "tiny-flux-shapes"
ZOO_DIR = Path(__file__).parent
# Keyword arguments for calling the shipped 32x32 pipeline (no aspect-ratio binning, no bs4 caption cleaning).
# Optional: `load()` returns a pipeline that uses them by default; passing them gives identical images.
CALL_KWARGS = {"num_inference_steps": 20, "guidance_scale": 4.5, "use_resolution_binning": False, "clean_caption": False}
# tiny-flux-shapes: true CFG (no guidance embedding) against the empty prompt, 32-token prompts as in training.
FLUX_CALL_KWARGS = {"num_inference_steps": 20, "true_cfg_scale": 4.5, "max_sequence_length": 32}


class _ShapesDefaults:
    """Mixin: call defaults that fit a shipped 32x32 model, so ``pipe(prompt)`` just works (explicit arguments win);
    saved folders name the plain diffusers class, so plain diffusers loads them too."""

    CALL_DEFAULTS: ClassVar[dict[str, Any]] = {}
    GUIDANCE_KWARG: ClassVar[str] = "guidance_scale"  # the call argument that sets the CFG scale
    BASE: ClassVar[type] = object  # the diffusers pipeline class

    def _with_defaults(self, args: tuple, kwargs: dict) -> dict:
        """`kwargs` completed with CALL_DEFAULTS for every argument not given by name or position."""
        positional = list(inspect.signature(self.BASE.__call__).parameters)[1:1 + len(args)]
        return {**{k: v for k, v in self.CALL_DEFAULTS.items() if k not in positional}, **kwargs}

    def to_json_string(self) -> str:
        data = json.loads(super().to_json_string())  # type: ignore[misc]
        data["_class_name"] = self.BASE.__name__
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


class ShapesPixArtPipeline(_ShapesDefaults, PixArtAlphaPipeline):
    """`PixArtAlphaPipeline` for `tiny-pixart-shapes`: 20 steps, guidance 4.5, 32x32, no resolution binning (it only
    knows sample sizes 32/64/128 of the big models), no caption cleaning (needs bs4/ftfy)."""

    CALL_DEFAULTS: ClassVar[dict[str, Any]] = {**CALL_KWARGS, "height": 32, "width": 32}
    BASE: ClassVar[type] = PixArtAlphaPipeline

    @functools.wraps(PixArtAlphaPipeline.__call__)  # the signature (and its defaults) stay inspectable
    def __call__(self, *args, **kwargs):
        return super().__call__(*args, **self._with_defaults(args, kwargs))


class ShapesFluxPipeline(_ShapesDefaults, FluxPipeline):
    """`FluxPipeline` for `tiny-flux-shapes`: 20 Euler steps, true CFG 4.5 against the empty prompt, 32x32, 32-token
    prompts. The negative prompt defaults to one empty prompt per prompt (FLUX encodes a lone string as batch 1)."""

    # the negative prompt is a call default, so every loop built from CALL_DEFAULTS (search, validate, benchmarks)
    # runs the same true-CFG generation as `pipe(prompt)`
    CALL_DEFAULTS: ClassVar[dict[str, Any]] = {**FLUX_CALL_KWARGS, "height": 32, "width": 32, "negative_prompt": ""}
    GUIDANCE_KWARG: ClassVar[str] = "true_cfg_scale"
    BASE: ClassVar[type] = FluxPipeline

    @functools.wraps(FluxPipeline.__call__)
    def __call__(self, *args, **kwargs):
        own_negative = kwargs.get("negative_prompt") is not None
        kwargs = self._with_defaults(args, kwargs)
        prompt = args[0] if args else kwargs.get("prompt")
        if kwargs.get("negative_prompt_embeds") is not None and not own_negative:
            kwargs.pop("negative_prompt", None)  # the caller's embeddings replace the default
        elif isinstance(kwargs.get("negative_prompt"), str) and isinstance(prompt, list):
            kwargs["negative_prompt"] = [kwargs["negative_prompt"]] * len(prompt)
        return super().__call__(*args, **kwargs)


MODELS: dict[str, type[_ShapesDefaults]] = {DEFAULT_MODEL: ShapesPixArtPipeline, FLUX_MODEL: ShapesFluxPipeline}


def _pipeline_class(path: Path) -> type[_ShapesDefaults]:
    """The shapes pipeline class for a saved folder, by the diffusers class its model_index.json names."""
    name = json.loads((path / "model_index.json").read_text())["_class_name"]
    classes = {cls.BASE.__name__: cls for cls in MODELS.values()}
    if name not in classes:
        raise ValueError(f"{path}: a {name} folder is not a shapes pipeline (expected one of {sorted(classes)})")
    return classes[name]


def load(name: str = DEFAULT_MODEL, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """Load a shipped pipeline (or a folder of one) offline; ``pipe(prompt)`` makes 32x32 images.

    Every `--model` value (tiny, tiny-flux, random-tiny, folders, hub ids) goes through `dit_cache.load_pipeline`."""
    path = Path(name) if Path(name).is_dir() else ZOO_DIR / name
    if not (path / "model_index.json").exists():
        raise FileNotFoundError(f"no zoo model {name!r} at {path} (shipped: {', '.join(MODELS)})")
    pipe = _pipeline_class(path).from_pretrained(str(path), dtype=dtype, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
