"""PixArt-α / PixArt-Σ (`PixArtTransformer2DModel`): attn1, attn2, ff per block (ECAD names)."""

from __future__ import annotations

from .base import Adapter, BlockGroup, InputSpec, latent_hw, meta


def _example_inputs(config, spec: InputSpec) -> dict:
    """Forward kwargs of one PixArt call at `spec` (meta tensors)."""
    h, w = latent_hw(spec)
    b, t = spec.batch, spec.text_len or 120
    added = {"resolution": None, "aspect_ratio": None}
    if config.get("use_additional_conditions") or (
        config.get("use_additional_conditions") is None and config.get("sample_size") == 128
    ):
        added = {"resolution": meta(b, 2), "aspect_ratio": meta(b, 1)}
    return {
        "hidden_states": meta(b, config["in_channels"], h, w),  # (B, C, H/8, W/8)
        "encoder_hidden_states": meta(b, t, config["caption_channels"]),  # (B, T, 4096)
        "timestep": meta(b),
        "added_cond_kwargs": added,
    }


ADAPTER = Adapter(
    family="pixart",
    class_names=("PixArtTransformer2DModel",),
    groups=(BlockGroup("transformer_blocks", {"attn1": "attn1", "attn2": "attn2", "ff": "ff"}),),
    example_inputs=_example_inputs,
    default_text_len=120,  # PixArt-α; PixArt-Σ uses 300
)
