"""Fidelity of a cached generation to the uncached one (same prompts, same seeds)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio


def decode_latents(pipe: Any, latents: torch.Tensor, height: int | None = None,
                   width: int | None = None) -> torch.Tensor:
    """Final latents -> float images (N, 3, H, W) in [0, 1], as the pipeline's own 'pt' output: FLUX's packed
    tokens (N, L, 4C) are unpacked first (square images unless `height`/`width` say otherwise), and the VAE's
    shift factor (FLUX, SD3) is added back after unscaling."""
    if latents.ndim == 3 and hasattr(pipe, "_unpack_latents"):
        side = math.isqrt(latents.shape[1])
        if height is None and width is None and side * side != latents.shape[1]:
            raise ValueError(f"{latents.shape[1]} packed latent tokens are not a square image: pass height and width")
        px = side * 2 * pipe.vae_scale_factor
        latents = pipe._unpack_latents(latents, height or px, width or px, pipe.vae_scale_factor)
    cfg = pipe.vae.config
    with torch.inference_mode():
        z = latents / cfg.scaling_factor + (getattr(cfg, "shift_factor", None) or 0.0)
        img = pipe.vae.decode(z, return_dict=False)[0]
    return pipe.image_processor.postprocess(img, output_type="pt")


def frames_as_image(video: torch.Tensor) -> torch.Tensor:
    """A video batch (N, F, 3, H, W) as one image per video (N, 3, F*H, W): frames stacked top to bottom, so
    every image metric (PSNR, FID, the grid) judges whole videos."""
    n, f, c, h, w = video.shape
    return video.permute(0, 2, 1, 3, 4).reshape(n, c, f * h, w)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> uint8 (values clamped, rounded)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def psnr_per_image(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (N,) in dB of float images in [0, 1], (N, C, H, W); identical images give +inf."""
    if images.shape != reference.shape:
        raise ValueError(f"shape mismatch: {tuple(images.shape)} vs {tuple(reference.shape)}")
    return peak_signal_noise_ratio(images.float(), reference.float(), data_range=1.0, reduction="none",
                                   dim=(1, 2, 3))


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean per-image PSNR (dB) of float images in [0, 1], (N, C, H, W); identical images give +inf."""
    return float(psnr_per_image(images, reference).mean())


def latent_mse(latents: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean squared error between final latents."""
    if latents.shape != reference.shape:
        raise ValueError(f"shape mismatch: {tuple(latents.shape)} vs {tuple(reference.shape)}")
    return float(torch.mean((latents.float() - reference.float()) ** 2))
