"""FLUX.1 (`FluxTransformer2DModel`): double-stream blocks "0".."18", single-stream "single_0".."single_37".

Component names follow ECAD: full_attn / full_ff / full_ff_context in double blocks,
single_attn / single_proj_mlp / single_proj_out in single blocks.
"""

from __future__ import annotations

from .base import Adapter, BlockGroup, InputSpec, latent_hw, meta


def _example_inputs(config, spec: InputSpec) -> dict:
    """Forward kwargs of one FLUX call at `spec` (meta tensors; latents packed 2x2)."""
    h, w = latent_hw(spec)
    n_img, t, b = (h // 2) * (w // 2), spec.text_len or 512, spec.batch
    kwargs = {
        "hidden_states": meta(b, n_img, config["in_channels"]),  # (B, N, 64)
        "encoder_hidden_states": meta(b, t, config["joint_attention_dim"]),  # (B, T, 4096)
        "pooled_projections": meta(b, config["pooled_projection_dim"]),
        "timestep": meta(b),
        "img_ids": meta(n_img, 3),
        "txt_ids": meta(t, 3),
    }
    if config.get("guidance_embeds"):
        kwargs["guidance"] = meta(b)
    return kwargs


ADAPTER = Adapter(
    family="flux",
    class_names=("FluxTransformer2DModel",),
    groups=(
        BlockGroup("transformer_blocks", {"full_attn": "attn", "full_ff": "ff", "full_ff_context": "ff_context"}),
        BlockGroup(
            "single_transformer_blocks",
            {"single_attn": "attn", "single_proj_mlp": "proj_mlp", "single_proj_out": "proj_out"},
            id_prefix="single_",
        ),
    ),
    example_inputs=_example_inputs,
    block_outputs=("encoder_hidden_states", "hidden_states"),
    default_text_len=512,
)
