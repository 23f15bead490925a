"""tiny-flux-shapes: a genuine diffusers `FluxPipeline` trained on the procedural shapes world.

Architecture (FLUX.1's MMDiT at toy size): 4 double-stream + 8 single-stream blocks, hidden 128 (4 heads of 32, RoPE
axes 8/12/12), a 2x2-packed 16x16x4 latent = 64 image tokens beside 32 text tokens. Text: a tiny CLIP text model
(pooled vector; trained here) and the T5 encoder of tiny-pixart-shapes (fine-tuned jointly). VAE: the shipped
tiny-pixart-shapes VAE, reused as is (FLUX's 2x2 packing of its 4-channel latent gives the 16 input channels).

Objective: rectified flow as in FLUX/SD3: x_s = (1 - s) x0 + s eps, the transformer predicts v = eps - x0 from
(x_s, s); uniform s in (0, 1); 20 Euler steps at inference (shift 1). Guidance: **true CFG** (caption dropout to the
empty prompt, two transformer calls per step), not a guidance embedding: distilling one needs a trained CFG teacher
first (about twice the 2-hour budget), and true CFG is what makes the per-CFG-branch caching state matter.

    python -m training.train --arch flux --out runs/tiny-flux-shapes --export-dir dit_cache/zoo/tiny-flux-shapes \
        --steps 4600 --batch 32 --lr 1e-3 --eval-every 500 --max-minutes 105 --threads 1 --fg-weight 4 --min-snr 0
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, T5EncoderModel

from dit_cache.zoo import DEFAULT_MODEL, ZOO_DIR, ShapesFluxPipeline
from training import train as T

LATENT_CH = 4  # VAE latent channels; 4 x (2x2 packing) = 16 transformer input channels
PIXART_DIR = ZOO_DIR / DEFAULT_MODEL  # source of the reused VAE and the initial T5 encoder


# --------------------------------------------------------------------------- components
def build_clip(vocab_size: int, seed: int = 0) -> CLIPTextModel:
    """Tiny CLIP text model (2 layers, hidden 64); its pooled output (at the first `</s>`) is FLUX's pooled vector."""
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=T.TEXT_LEN, pad_token_id=0, bos_token_id=1,
                         eos_token_id=1, projection_dim=64)
    return CLIPTextModel(cfg)


def build_transformer(seed: int = 0, hidden: int = 128, double: int = 4, single: int = 8,
                      heads: int = 4) -> FluxTransformer2DModel:
    """FLUX transformer: `double` joint blocks, `single` single-stream blocks, no guidance embedding; zero-init out."""
    torch.manual_seed(seed)
    head = hidden // heads
    m = FluxTransformer2DModel(patch_size=1, in_channels=4 * LATENT_CH, num_layers=double, num_single_layers=single,
                               attention_head_dim=head, num_attention_heads=heads, joint_attention_dim=128,
                               pooled_projection_dim=64, guidance_embeds=False,
                               axes_dims_rope=(head // 4, 3 * head // 8, 3 * head // 8))
    torch.nn.init.zeros_(m.proj_out.weight)
    torch.nn.init.zeros_(m.proj_out.bias)
    return m


def build_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Euler over the rectified-flow sigmas, no shift (64 image tokens: FLUX's resolution shift would be ~1.6)."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=T.NUM_TRAIN_TIMESTEPS, shift=1.0,
                                           use_dynamic_shifting=False)


def reused_vae(src: Path = PIXART_DIR / "vae") -> AutoencoderKL:
    """The shipped tiny-pixart-shapes VAE in fp32; FLUX decodes `z / scaling + shift`, so shift_factor is set to 0."""
    vae = AutoencoderKL.from_pretrained(src, torch_dtype=torch.float32)
    vae.register_to_config(shift_factor=0.0)
    return vae.eval().requires_grad_(False)


def pixart_t5() -> T5EncoderModel:
    """tiny-pixart-shapes' trained T5 encoder in fp32: the initial weights of this model's T5."""
    return T5EncoderModel.from_pretrained(PIXART_DIR / "text_encoder", torch_dtype=torch.float32)


def make_pipeline(tok, clip, t5, vae, transformer) -> ShapesFluxPipeline:
    """Assemble a (shapes-defaults) FluxPipeline; one word-level tokenizer serves both text encoders."""
    pipe = ShapesFluxPipeline(scheduler=build_scheduler(), vae=vae, text_encoder=clip, tokenizer=tok,
                              text_encoder_2=t5, tokenizer_2=copy.deepcopy(tok), transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tokenizer():
    """The shapes word-level tokenizer, capped at the training length (CLIP pads prompts to model_max_length)."""
    tok = T.build_tokenizer()
    tok.model_max_length = T.TEXT_LEN
    return tok


# --------------------------------------------------------------------------- training
class FluxModels:
    """Tokenizer, frozen VAE, the trained transformer, T5 and CLIP encoders, and their EMA copies."""

    def __init__(self, out: Path, seed: int, hidden: int):
        self.tok = tokenizer()
        self.vae = reused_vae()
        if not (out / "vae").exists():  # the shared latent pool (training/train.py) encodes with out/vae
            self.vae.save_pretrained(out / "vae")
        self.te = pixart_t5()
        self.clip, self.dit = build_clip(len(self.tok), seed), build_transformer(seed, hidden=hidden)
        self.te_ema, self.clip_ema, self.dit_ema = (copy.deepcopy(x).eval() for x in (self.te, self.clip, self.dit))
        self.params = [*self.dit.parameters(), *self.te.parameters(), *self.clip.parameters()]

    def named(self) -> tuple[tuple[str, torch.nn.Module], ...]:
        """The checkpointed modules, by file stem."""
        return (("dit", self.dit), ("te", self.te), ("clip", self.clip), ("dit_ema", self.dit_ema),
                ("te_ema", self.te_ema), ("clip_ema", self.clip_ema))


def pack(x: torch.Tensor) -> torch.Tensor:
    """(B, C, 16, 16) latents -> FLUX tokens (B, 64, 4C) (diffusers' 2x2 packing)."""
    return FluxPipeline._pack_latents(x, x.shape[0], x.shape[1], x.shape[2], x.shape[3])


def fg_map(mask: torch.Tensor) -> torch.Tensor:
    """Foreground mask (B, 1, 16, 16) -> the packed layout of the targets (B, 64, 16)."""
    return pack(mask.expand(-1, LATENT_CH, -1, -1))


def flux_batch(data, tok, step: int, seed: int, batch: int, p_two: float | None, t_bias: float,
               min_snr: float) -> tuple:
    """One step's draws (seeded by step, as for PixArt): indices, captions (CFG dropout), sigmas (B,), packed
    noised latents and velocity targets (B, 64, 16), unit weights. `t_bias` B > 0: sigma density ∝ s^B."""
    idx, ti, _, _, _, _ = T._dit_batch(data, tok, step, seed, batch, p_two, 0.0, 0.0)  # same indices and captions
    g = torch.Generator().manual_seed(seed * 1_000_003 + step + 7)
    s = torch.rand(batch, generator=g) ** (1 / (1 + max(t_bias, 0.0)))
    x0 = pack(data.z_pool[idx])
    eps = torch.randn(x0.shape, generator=g)
    sv = s.view(-1, 1, 1)
    return idx, ti, s, (1 - sv) * x0 + sv * eps, eps - x0, torch.ones(batch, 1, 1)


def flux_update(m: FluxModels, opt: torch.optim.Optimizer, ti, s: torch.Tensor, xt: torch.Tensor, v: torch.Tensor,
                w: torch.Tensor, decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on the weighted flow loss (bf16 autocast where fast, grad clip 1) and the EMA update."""
    n_img, n_txt = xt.shape[1], ti.input_ids.shape[1]
    side = int(n_img ** 0.5)
    img_ids = FluxPipeline._prepare_latent_image_ids(1, side, side, xt.device, xt.dtype)  # (64, 3)
    with T.autocast():
        emb = m.te(ti.input_ids).last_hidden_state  # (B, L, 128): no mask, as FluxPipeline encodes
        pooled = m.clip(ti.input_ids).pooler_output  # (B, 64)
        pred = m.dit(hidden_states=xt, encoder_hidden_states=emb, pooled_projections=pooled, timestep=s,
                     img_ids=img_ids, txt_ids=torch.zeros(n_txt, 3), return_dict=False)[0]  # (B, 64, 16)
    loss = (w * (pred.float() - v) ** 2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(m.params, 1.0)
    opt.step()
    for ema, mod in ((m.dit_ema, m.dit), (m.te_ema, m.te), (m.clip_ema, m.clip)):
        T._ema_update(ema, mod, decay)
    return loss, gn


# --------------------------------------------------------------------------- export and evaluation
def _count(sd: dict, prefix: str) -> int:
    """Number of blocks `prefix`0.. `prefix`N-1 in a state dict."""
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


def export(out: Path, export_dir: Path, seed: int = 0, command: str = "") -> Path:
    """Assemble the pipeline from the reused VAE and the EMA weights; save as fp16 safetensors + training log."""
    d = out / "dit_ckpt"
    tok, state = tokenizer(), json.loads((d / "state.json").read_text())
    sd = load_file(str(d / "dit_ema.safetensors"))
    dit = build_transformer(seed, hidden=sd["proj_out.weight"].shape[1], double=_count(sd, "transformer_blocks."),
                            single=_count(sd, "single_transformer_blocks."))
    clip = build_clip(len(tok), seed)
    te = pixart_t5()
    for mod, name in ((dit, "dit_ema"), (clip, "clip_ema"), (te, "te_ema")):
        mod.load_state_dict(load_file(str(d / f"{name}.safetensors")))
    pipe = make_pipeline(tok, clip, te, reused_vae(), dit).to(dtype=torch.float16)
    export_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(export_dir, safe_serialization=True)
    log = {"command": command, "seed": seed, "vae": f"reused: {PIXART_DIR.name}/vae (shift_factor 0)",
           "dit": {k: v for k, v in state.items() if k not in ("log", "adherence")},
           "dit_loss": state["log"][:: max(1, len(state["log"]) // 100)], "adherence": state["adherence"]}
    T._save_json(export_dir / "training_log.json", log)
    return export_dir


def initial_pipeline(pipe: ShapesFluxPipeline, seed: int = 0) -> ShapesFluxPipeline:
    """The untrained model: `pipe`'s VAE, tokenizer and T5 init, fresh CLIP and transformer (output not zeroed)."""
    cfg = pipe.transformer.config
    dit = build_transformer(seed, hidden=cfg.num_attention_heads * cfg.attention_head_dim, double=cfg.num_layers,
                            single=cfg.num_single_layers, heads=cfg.num_attention_heads)
    torch.manual_seed(seed)
    torch.nn.init.normal_(dit.proj_out.weight, std=0.02)  # zero-init output would give a constant image
    te = pixart_t5()
    return make_pipeline(pipe.tokenizer, build_clip(len(pipe.tokenizer), seed), te, pipe.vae.float(), dit)


FLUX = T.Arch("flux", FluxModels, flux_batch, flux_update,
              lambda m: make_pipeline(m.tok, m.clip_ema, m.te_ema, m.vae, m.dit_ema), export, fg_map)
