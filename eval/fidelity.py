"""Fidelity of a cached generation to the uncached one (same prompts, same seeds)."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean per-image PSNR (dB) of float images in [0, 1], (N, C, H, W); identical images give +inf."""
    if images.shape != reference.shape:
        raise ValueError(f"shape mismatch: {tuple(images.shape)} vs {tuple(reference.shape)}")
    vals = peak_signal_noise_ratio(images.float(), reference.float(), data_range=1.0, reduction="none",
                                   dim=(1, 2, 3))
    return float(vals.mean())


def latent_mse(latents: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean squared error between final latents."""
    if latents.shape != reference.shape:
        raise ValueError(f"shape mismatch: {tuple(latents.shape)} vs {tuple(reference.shape)}")
    return float(torch.mean((latents.float() - reference.float()) ** 2))
