"""Model zoo: small diffusers pipelines shipped with dit-cache (embedded default: `tiny-pixart-shapes`)."""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import PixArtAlphaPipeline

__all__ = ["CALL_KWARGS", "DEFAULT_MODEL", "ZOO_DIR", "ShapesPixArtPipeline", "load"]

DEFAULT_MODEL = "tiny-pixart-shapes"
ZOO_DIR = Path(__file__).parent
# Keyword arguments for calling the shipped 32x32 pipeline (no aspect-ratio binning, no bs4 caption cleaning).
# Optional: `load()` returns a pipeline that uses them by default; passing them gives identical images.
CALL_KWARGS = {"num_inference_steps": 20, "guidance_scale": 4.5, "use_resolution_binning": False, "clean_caption": False}
_PIXART_CALL = inspect.signature(PixArtAlphaPipeline.__call__)


class ShapesPixArtPipeline(PixArtAlphaPipeline):
    """`PixArtAlphaPipeline` whose call defaults fit the shipped 32x32 model: ``pipe(prompt)`` just works.

    Defaults (`CALL_DEFAULTS`): 20 steps, guidance 4.5, 32x32, no resolution binning (it only knows sample
    sizes 32/64/128 of the big models), no caption cleaning (needs bs4/ftfy). Explicit arguments win. Saved
    folders name `PixArtAlphaPipeline`, so plain diffusers loads them too."""

    CALL_DEFAULTS: ClassVar[dict[str, Any]] = {**CALL_KWARGS, "height": 32, "width": 32}

    @functools.wraps(PixArtAlphaPipeline.__call__)
    def __call__(self, *args, **kwargs):
        positional = list(_PIXART_CALL.parameters)[1:1 + len(args)]
        for key, value in self.CALL_DEFAULTS.items():
            if key not in kwargs and key not in positional:
                kwargs[key] = value
        return super().__call__(*args, **kwargs)

    def to_json_string(self) -> str:
        data = json.loads(super().to_json_string())
        data["_class_name"] = PixArtAlphaPipeline.__name__
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def load(name: str = DEFAULT_MODEL, device: str = "cpu", dtype: torch.dtype = torch.float32) -> ShapesPixArtPipeline:
    """Load a shipped pipeline (or a folder of one) offline; ``pipe(prompt)`` makes 32x32 images.

    Every `--model` value (tiny, random-tiny, folders, hub ids) goes through `dit_cache.load_pipeline`."""
    path = Path(name) if Path(name).is_dir() else ZOO_DIR / name
    if not (path / "model_index.json").exists():
        raise FileNotFoundError(f"no zoo model {name!r} at {path}")
    pipe = ShapesPixArtPipeline.from_pretrained(str(path), dtype=dtype, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
