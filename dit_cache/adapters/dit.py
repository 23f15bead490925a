"""DiT-XL/2 class-conditional (`DiTTransformer2DModel`): attn1, ff per block."""

from __future__ import annotations

import torch

from .base import Adapter, BlockGroup, InputSpec, latent_hw, meta


def _example_inputs(config, spec: InputSpec) -> dict:
    """Forward kwargs of one DiT call at `spec` (meta tensors)."""
    h, w = latent_hw(spec)
    return {
        "hidden_states": meta(spec.batch, config["in_channels"], h, w),  # (B, C, H/8, W/8)
        "timestep": meta(spec.batch),
        "class_labels": meta(spec.batch, dtype=torch.long),
    }


ADAPTER = Adapter(
    family="dit",
    class_names=("DiTTransformer2DModel",),
    groups=(BlockGroup("transformer_blocks", {"attn1": "attn1", "ff": "ff"}),),
    example_inputs=_example_inputs,
    default_text_len=0,
)
