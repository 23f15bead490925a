"""Stable Diffusion 3 / 3.5 (`SD3Transformer2DModel`): joint blocks with attn, attn2 (3.5 dual attention), ff, ff_context."""

from __future__ import annotations

from .base import Adapter, BlockGroup, InputSpec, latent_hw, meta


def _example_inputs(config, spec: InputSpec) -> dict:
    """Forward kwargs of one SD3 call at `spec` (meta tensors)."""
    h, w = latent_hw(spec)
    b, t = spec.batch, spec.text_len or 333  # 77 CLIP + 256 T5 tokens
    return {
        "hidden_states": meta(b, config["in_channels"], h, w),  # (B, C, H/8, W/8)
        "encoder_hidden_states": meta(b, t, config["joint_attention_dim"]),  # (B, T, 4096)
        "pooled_projections": meta(b, config["pooled_projection_dim"]),
        "timestep": meta(b),
    }


ADAPTER = Adapter(
    family="sd3",
    class_names=("SD3Transformer2DModel",),
    groups=(BlockGroup("transformer_blocks", {"attn": "attn", "attn2": "attn2", "ff": "ff", "ff_context": "ff_context"}),),
    example_inputs=_example_inputs,
    block_outputs=("encoder_hidden_states", "hidden_states"),
    default_text_len=333,
)
