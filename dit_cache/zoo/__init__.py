"""Model zoo: small diffusers pipelines shipped with dit-cache (embedded default: `tiny-pixart-shapes`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def load_model(model: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """What every `--model` option accepts: 'tiny' (the embedded trained model), 'random-tiny[:LAYERS]'
    (random-weight PixArt, plumbing only), or a local pipeline folder / hub id (offline: the local cache)."""
    if model == "tiny":
        try:
            return load(device=device, dtype=dtype)
        except FileNotFoundError as e:
            raise RuntimeError(f"the embedded model is not installed ({e}); use --model random-tiny for a "
                               "random-weight PixArt (plumbing only) or pass a local pipeline folder") from None
    if model == "random-tiny" or model.startswith("random-tiny:"):
        from diffusers.utils import logging as dlog

        from .tiny_random import build_tiny_pipeline

        dlog.get_logger("diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha").setLevel("ERROR")  # T5 truncation
        layers = int(model.split(":", 1)[1]) if ":" in model else None
        pipe = build_tiny_pipeline("pixart", num_layers=layers)
    else:
        from diffusers import DiffusionPipeline

        try:
            pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=dtype)
        except Exception as e:  # hub client errors vary offline
            raise RuntimeError(f"could not load {model!r} ({type(e).__name__}: {str(e)[:300]}); pass a local "
                               "pipeline folder, a hub id that is in the local cache, 'tiny' or 'random-tiny'") from None
    pipe.set_progress_bar_config(disable=True)
    if torch.device(device).type != "cpu" or dtype != torch.float32:
        pipe = pipe.to(device=device, dtype=dtype)
    return pipe
