"""Model zoo: small diffusers pipelines shipped with dit-cache (embedded default: `tiny-pixart-shapes`)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import PixArtAlphaPipeline

DEFAULT_MODEL = "tiny-pixart-shapes"
ZOO_DIR = Path(__file__).parent
# Keyword arguments for calling the shipped 32x32 pipeline (no aspect-ratio binning, no bs4 caption cleaning).
CALL_KWARGS = {"num_inference_steps": 20, "guidance_scale": 4.5, "use_resolution_binning": False, "clean_caption": False}


def load(name: str = DEFAULT_MODEL, device: str = "cpu", dtype: torch.dtype = torch.float32) -> PixArtAlphaPipeline:
    """Load a shipped pipeline offline (32x32 images: call it with `**CALL_KWARGS`)."""
    path = Path(name) if Path(name).is_dir() else ZOO_DIR / name
    if not (path / "model_index.json").exists():
        raise FileNotFoundError(f"no zoo model {name!r} at {path}")
    pipe = PixArtAlphaPipeline.from_pretrained(str(path), dtype=dtype, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
