"""Tiny random-weight diffusers pipelines, built fully offline, for tests and demos."""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLWan,
    DiffusionPipeline,
    DiTPipeline,
    DiTTransformer2DModel,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    PixArtAlphaPipeline,
    PixArtTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
    UMT5Config,
    UMT5EncoderModel,
)

__all__ = ["DEFAULT_LAYERS", "FAMILIES", "build_midsize_pixart_transformer", "build_tiny_pipeline", "tiny_call_defaults",
           "tiny_call_kwargs"]

FAMILIES = ("pixart", "dit", "flux", "sd3", "wan")

M = TypeVar("M", bound=torch.nn.Module)

PROMPT = "a photo of a cat"
NEGATIVE_PROMPT = "blurry"
TEXT_DIM = 32  # d_model of every tiny text encoder
TEXT_SEQ_LEN = 32  # max_sequence_length passed to the pipelines (char-level T5/UMT5 tokens)
CLIP_MAX_LEN = 77  # Flux/SD3 always pad CLIP prompts to tokenizer.model_max_length
VOCAB_SIZE = 128  # covers every tiny tokenizer below (asserted at build time)
_CHARS = string.ascii_letters + string.digits + ".,!?'-"
DEFAULT_LAYERS = {"pixart": 4, "dit": 4, "flux": 2, "sd3": 2, "wan": 2}


# ----------------------------------------------------------------------------- helpers


def _seeded(seed: int, factory: Callable[[], M]) -> M:
    """Build a module with torch seeded to `seed`, leaving the caller's global RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory().eval()


def _t5_tokenizer() -> T5Tokenizer:
    """Character-level unigram T5 tokenizer built in memory (no sentencepiece file)."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    vocab += [(c, -2.0) for c in _CHARS]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0)
    assert len(tok) <= VOCAB_SIZE
    return tok


def _clip_tokenizer() -> CLIPTokenizer:
    """Character-level CLIP BPE tokenizer built in memory (empty merges: every word splits into chars)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in dict.fromkeys(_CHARS.lower()):  # CLIPTokenizer lower-cases its input
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=CLIP_MAX_LEN)
    assert len(tok) <= VOCAB_SIZE
    return tok


def _t5_encoder(seed: int) -> T5EncoderModel:
    """Two-layer T5 encoder with d_model TEXT_DIM."""
    config = T5Config(
        vocab_size=VOCAB_SIZE, d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
    )
    return _seeded(seed, lambda: T5EncoderModel(config))


def _umt5_encoder(seed: int) -> UMT5EncoderModel:
    """Two-layer UMT5 encoder with d_model TEXT_DIM."""
    config = UMT5Config(
        vocab_size=VOCAB_SIZE, d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
    )
    return _seeded(seed, lambda: UMT5EncoderModel(config))


def _clip_config() -> CLIPTextConfig:
    """Two-layer CLIP text config whose special ids match `_clip_tokenizer`."""
    # eos_token_id != 2 makes CLIP pool at the first <|endoftext|> instead of the legacy argmax(input_ids).
    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=CLIP_MAX_LEN, projection_dim=TEXT_DIM,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )


def _vae(seed: int, latent_channels: int, **scaling: float) -> AutoencoderKL:
    """Two-level AutoencoderKL (vae_scale_factor 2) with 8 channels per level."""
    return _seeded(seed, lambda: AutoencoderKL(
        block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=latent_channels,
        norm_num_groups=4, sample_size=16, **scaling,
    ))


def _quiet(pipe: DiffusionPipeline) -> DiffusionPipeline:
    """Disable the pipeline's progress bar."""
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------- families


def _build_pixart(seed: int, num_layers: int) -> PixArtAlphaPipeline:
    """PixArt-alpha: ada_norm_single transformer, T5 text encoder, learned-sigma output."""
    transformer = _seeded(seed, lambda: PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=num_layers,
        sample_size=8, patch_size=2, caption_channels=TEXT_DIM, cross_attention_dim=32,
        norm_type="ada_norm_single", use_additional_conditions=False, norm_num_groups=4,
    ))
    return _quiet(PixArtAlphaPipeline(
        tokenizer=_t5_tokenizer(), text_encoder=_t5_encoder(seed + 1), vae=_vae(seed + 2, 4),
        transformer=transformer, scheduler=DPMSolverMultistepScheduler(),
    ))


def _build_dit(seed: int, num_layers: int) -> DiTPipeline:
    """DiT: class-conditional ada_norm_zero transformer, learned-sigma output."""
    # DiTPipeline hard-codes the null (CFG) class id 1000, so the label table needs 1000 classes (+1 null).
    transformer = _seeded(seed, lambda: DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=num_layers,
        sample_size=8, patch_size=2, num_embeds_ada_norm=1000, norm_num_groups=4,
    ))
    id2label = {i: f"class{i}" for i in range(10)}
    return _quiet(DiTPipeline(
        transformer=transformer, vae=_vae(seed + 1, 4), scheduler=DPMSolverMultistepScheduler(),
        id2label=id2label,
    ))


def _build_flux(seed: int, num_layers: int) -> FluxPipeline:
    """Flux-dev-like: `num_layers` double-stream blocks + 2 single-stream blocks, guidance embedding."""
    # in_channels 16 = 4 VAE latent channels x 2x2 packing; axes_dims_rope sums to attention_head_dim.
    transformer = _seeded(seed, lambda: FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=num_layers, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=TEXT_DIM, pooled_projection_dim=TEXT_DIM,
        guidance_embeds=True, axes_dims_rope=(4, 6, 6),
    ))
    # Flux-dev scheduler settings: the pipeline passes `mu`, which needs dynamic shifting.
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )
    # Flux/SD3 decode with `latents / scaling_factor + shift_factor`, so shift_factor must be set.
    vae = _vae(seed + 1, 4, scaling_factor=0.3611, shift_factor=0.1159)
    return _quiet(FluxPipeline(
        scheduler=scheduler, vae=vae,
        text_encoder=_seeded(seed + 2, lambda: CLIPTextModel(_clip_config())), tokenizer=_clip_tokenizer(),
        text_encoder_2=_t5_encoder(seed + 3), tokenizer_2=_t5_tokenizer(), transformer=transformer,
    ))


def _build_sd3(seed: int, num_layers: int) -> StableDiffusion3Pipeline:
    """SD3.5-like MMDiT: block 0 has dual attention (`attn2`), two CLIPs + T5."""
    # pooled_projection_dim = 2 CLIP projections concatenated; joint_attention_dim = T5 d_model.
    transformer = _seeded(seed, lambda: SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=num_layers,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=TEXT_DIM,
        caption_projection_dim=32, pooled_projection_dim=2 * TEXT_DIM, pos_embed_max_size=16,
        dual_attention_layers=(0,), qk_norm="rms_norm",
    ))
    vae = _vae(seed + 1, 16, scaling_factor=1.5305, shift_factor=0.0609)
    return _quiet(StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=_seeded(seed + 2, lambda: CLIPTextModelWithProjection(_clip_config())),
        tokenizer=_clip_tokenizer(),
        text_encoder_2=_seeded(seed + 3, lambda: CLIPTextModelWithProjection(_clip_config())),
        tokenizer_2=_clip_tokenizer(),
        text_encoder_3=_t5_encoder(seed + 4), tokenizer_3=_t5_tokenizer(),
    ))


def _build_wan(seed: int, num_layers: int) -> WanPipeline:
    """Wan 2.1-like video transformer with UMT5 text encoder and the 3D causal Wan VAE."""
    transformer = _seeded(seed, lambda: WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=TEXT_DIM, freq_dim=32, ffn_dim=64, num_layers=num_layers, rope_max_seq_len=32,
    ))
    # Smallest Wan VAE: 3 base channels; keeps the pipeline's 8x spatial / 4x temporal compression.
    vae = _seeded(seed + 1, lambda: AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
    ))
    return _quiet(WanPipeline(
        tokenizer=_t5_tokenizer(), text_encoder=_umt5_encoder(seed + 2), vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), transformer=transformer,
    ))


_BUILDERS: dict[str, Callable[[int, int], DiffusionPipeline]] = {
    "pixart": _build_pixart, "dit": _build_dit, "flux": _build_flux, "sd3": _build_sd3, "wan": _build_wan,
}


# ----------------------------------------------------------------------------- public API


def _check_family(family: str) -> None:
    """Raise ValueError for an unknown family."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def build_tiny_pipeline(family: str, seed: int = 0, num_layers: int | None = None) -> DiffusionPipeline:
    """Tiny random-weight pipeline for `family`, built offline (no hub).

    `num_layers` overrides the transformer's block count (default 4 for pixart/dit, 2 otherwise);
    for flux it is the number of double-stream blocks, and the 2 single-stream blocks are kept.
    """
    _check_family(family)
    layers = DEFAULT_LAYERS[family] if num_layers is None else num_layers
    if layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {layers}")
    return _BUILDERS[family](seed, layers)


def tiny_call_defaults(family: str, num_inference_steps: int = 20) -> dict[str, Any]:
    """Keyword arguments of every call of the tiny pipeline of `family` (no prompt, generator or output type),
    with classifier-free guidance on. `dit_cache.load_pipeline("random-tiny:FAMILY")` uses these."""
    _check_family(family)
    kwargs: dict[str, Any] = {"num_inference_steps": num_inference_steps}
    if family == "dit":
        return {**kwargs, "guidance_scale": 4.0}
    kwargs["max_sequence_length"] = TEXT_SEQ_LEN
    if family == "pixart":
        # Resolution binning only knows sample sizes 32/64/128; caption cleaning needs bs4+ftfy.
        extra = {"height": 16, "width": 16, "guidance_scale": 4.5, "use_resolution_binning": False,
                 "clean_caption": False}
    elif family == "flux":
        # true_cfg_scale > 1 with a negative prompt = real CFG (separate cond/uncond transformer calls).
        extra = {"height": 16, "width": 16, "guidance_scale": 3.5, "true_cfg_scale": 4.0,
                 "negative_prompt": NEGATIVE_PROMPT}
    elif family == "sd3":
        extra = {"height": 16, "width": 16, "guidance_scale": 5.0, "negative_prompt": NEGATIVE_PROMPT}
    else:  # wan: num_frames must be 4k+1; height/width multiples of 16
        extra = {"height": 32, "width": 32, "num_frames": 5, "guidance_scale": 5.0,
                 "negative_prompt": NEGATIVE_PROMPT}
    return {**kwargs, **extra}


def tiny_call_kwargs(
    family: str, num_inference_steps: int = 20, seed: int = 0, output_type: str | None = None
) -> dict[str, Any]:
    """Full call kwargs for the tiny pipeline of `family`: `tiny_call_defaults` + a fixed prompt (class 1 for
    dit), a seeded generator and `output_type` (default "latent"; "np" for dit, whose pipeline always decodes)."""
    kwargs = {
        **tiny_call_defaults(family, num_inference_steps),
        "generator": torch.Generator("cpu").manual_seed(seed),
        "output_type": output_type or ("np" if family == "dit" else "latent"),
    }
    return {**kwargs, "class_labels": [1]} if family == "dit" else {**kwargs, "prompt": PROMPT}


def build_midsize_pixart_transformer(seed: int = 0) -> PixArtTransformer2DModel:
    """PixArt-shaped transformer for CPU benchmarks: 12 blocks, hidden 384 (6 heads x 64), 256 tokens at 32x32."""
    return _seeded(seed, lambda: PixArtTransformer2DModel(
        num_attention_heads=6, attention_head_dim=64, in_channels=4, out_channels=8, num_layers=12,
        sample_size=32, patch_size=2, caption_channels=64, cross_attention_dim=384,
        norm_type="ada_norm_single", use_additional_conditions=False,
    ))
