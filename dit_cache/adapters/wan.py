"""Wan2.1 (`WanTransformer3DModel`): attn1 (self), attn2 (cross), ff per block.

Wan pipelines call the transformer separately for cond and uncond: the runtime keeps one cache per call.
"""

from __future__ import annotations

from .base import Adapter, BlockGroup, InputSpec, latent_hw, meta


def _example_inputs(config, spec: InputSpec) -> dict:
    """Forward kwargs of one Wan call at `spec` (meta tensors; 4x temporal VAE compression)."""
    h, w = latent_hw(spec)
    frames = (spec.num_frames - 1) // 4 + 1
    b, t = spec.batch, spec.text_len or 512
    return {
        "hidden_states": meta(b, config["in_channels"], frames, h, w),  # (B, C, F, H/8, W/8)
        "timestep": meta(b),
        "encoder_hidden_states": meta(b, t, config["text_dim"]),  # (B, T, 4096)
    }


ADAPTER = Adapter(
    family="wan",
    class_names=("WanTransformer3DModel",),
    groups=(BlockGroup("blocks", {"attn1": "attn1", "attn2": "attn2", "ff": "ffn"}),),
    example_inputs=_example_inputs,
    default_text_len=512,
)
