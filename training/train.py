"""Train the embedded default model `tiny-pixart-shapes` (a tiny PixArt-alpha pipeline) on procedural shapes.

Stages (default `all` = vae -> dit -> [decoder if --dec-steps] -> export; each resumable with --resume).
The shipped weights (~101 min on a 2-core CPU; tiny-pixart-shapes/TRAINING.md has the stages and their log):
  python -m training.train --out runs/tiny-pixart-shapes-v3 --export-dir dit_cache/zoo/tiny-pixart-shapes \
      --vae-steps 900 --steps 5500 --batch 32 --lr 1e-3 --eval-every 400 --max-minutes 100 --threads 1 \
      --fg-weight 4 --min-snr 0 --dec-steps 3000
  python -m training.train vae|dit|decoder|export --out runs/tiny-pixart-shapes ...
  python -m training.train scorer                      # trains eval/weights/shapes_scorer.safetensors
  python -m training.train evaluate --model dit_cache/zoo/tiny-pixart-shapes --num-prompts 256
  python -m training.train grid --model dit_cache/zoo/tiny-pixart-shapes
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    PixArtAlphaPipeline,
    PixArtTransformer2DModel,
)
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from dit_cache import zoo
from dit_cache.zoo import DEFAULT_MODEL, ZOO_DIR, ShapesPixArtPipeline
from training import shapes as S

PID_FILE = Path("/tmp/dit_train.pid")
RES = 32  # image side (pixels)
LATENT = 16  # latent side; 64 image tokens at patch 2
TEXT_LEN = 32  # training token length (>= longest caption + </s>); inference pads to 120 with a mask
P_UNCOND = 0.1  # caption dropout for classifier-free guidance
NUM_TRAIN_TIMESTEPS = 1000


# --------------------------------------------------------------------------- components
def build_tokenizer():
    """Word-level fast tokenizer over the shapes vocabulary (`</s>` appended, pad id 0, eos id 1)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in S.vocabulary():
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=512, padding_side="right")


def build_text_encoder(vocab_size: int, seed: int = 0):
    """Tiny T5 encoder (2 layers, d_model 128), trained jointly with the transformer."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=vocab_size, d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=16, relative_attention_max_distance=64, dropout_rate=0.0,
                   feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                   is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False)
    return T5EncoderModel(cfg)


def build_vae(seed: int = 0) -> AutoencoderKL:
    """Small KL autoencoder: (3, 32, 32) images <-> (4, 16, 16) latents."""
    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32),
                         layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=RES)


def build_transformer(seed: int = 0, hidden: int = 128, layers: int = 12, heads: int = 4) -> PixArtTransformer2DModel:
    """PixArt-alpha transformer: 12 blocks, hidden 128, 16x16 latent at patch 2 = 64 tokens; zero-init output."""
    torch.manual_seed(seed)
    m = PixArtTransformer2DModel(
        num_attention_heads=heads, attention_head_dim=hidden // heads, in_channels=4, out_channels=4,
        num_layers=layers, cross_attention_dim=hidden, caption_channels=128, sample_size=LATENT, patch_size=2,
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=NUM_TRAIN_TIMESTEPS, use_additional_conditions=False)
    torch.nn.init.zeros_(m.proj_out.weight)
    torch.nn.init.zeros_(m.proj_out.bias)
    return m


def build_scheduler() -> DPMSolverMultistepScheduler:
    """DPM-Solver++ (2M) over the linear-beta DDPM schedule, v-prediction."""
    return DPMSolverMultistepScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_start=1e-4, beta_end=0.02,
                                       beta_schedule="linear", prediction_type="v_prediction",
                                       algorithm_type="dpmsolver++", solver_order=2)


def make_pipeline(tokenizer, text_encoder, vae, transformer) -> PixArtAlphaPipeline:
    """Assemble a (shapes-defaults) PixArtAlphaPipeline from components (progress bar off)."""
    pipe = ShapesPixArtPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                               scheduler=build_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate(pipe: PixArtAlphaPipeline, prompts: list[str], seed: int = 0, steps: int = 20, guidance: float = 4.5,
             batch: int = 64) -> torch.Tensor:
    """Generate uint8 images (N, 3, 32, 32) for prompts with a shapes pipeline's call defaults (CFG on, deterministic
    per seed); `guidance` goes to the pipeline's own CFG argument (PixArt: guidance_scale, FLUX: true_cfg_scale)."""
    out = []
    for i in range(0, len(prompts), batch):
        g = torch.Generator().manual_seed(seed + i)
        img = pipe(prompts[i: i + batch], num_inference_steps=steps, generator=g, output_type="pt",
                   **{pipe.GUIDANCE_KWARG: guidance}).images  # (B, 3, H, W)
        out.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
    return torch.cat(out)


# --------------------------------------------------------------------------- helpers
def autocast() -> torch.autocast:
    """bf16 autocast where the CPU has AVX-512 (bf16 matmuls); on AVX2-only CPUs bf16 is ~8x slower than fp32
    (measured: FLUX transformer step 13.4 s vs 1.2 s), so there the context is disabled and training runs in fp32."""
    return torch.autocast("cpu", torch.bfloat16, enabled="AVX512" in torch.backends.cpu.get_cpu_capability())


def _pid_file(on: bool) -> None:
    """Write (on) or remove (off, if it is ours) the PID file that lets a benchmark pause this process."""
    if on:
        PID_FILE.write_text(str(os.getpid()))
    elif PID_FILE.exists() and PID_FILE.read_text().strip() == str(os.getpid()):
        PID_FILE.unlink()


class _Stop:
    """Turn SIGTERM/SIGINT into a flag so the loop can checkpoint and exit cleanly (SIGSTOP/SIGCONT are harmless)."""

    def __init__(self):
        self.flag = False
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, *_):
        self.flag = True


def _lr(step: int, base: float, warmup: int, total: int, floor: float = 0.1, tail: float = 0.2) -> float:
    """Linear warm-up, constant, then cosine decay to `floor * base` over the last `tail` of the steps.

    Mostly-constant LR + EMA keeps the EMA model good even if a time budget stops the run early.
    """
    if step < warmup:
        return base * (step + 1) / warmup
    start = total * (1 - tail)
    p = min(1.0, max(0.0, (step - start) / max(1.0, total - start)))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1 - decay)


def _save_json(path: Path, obj) -> None:
    """Write JSON atomically (temp file, then rename)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def _save_st(path: Path, sd: dict) -> None:
    """Write a state dict as safetensors atomically (temp file, then rename)."""
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().clone().contiguous() for k, v in sd.items()}, str(tmp))
    tmp.replace(path)


def _render_tensor(scenes: list[S.Scene], rng: np.random.Generator | None) -> torch.Tensor:
    """Scenes -> float (N, 3, 32, 32) in [-1, 1]."""
    x = torch.from_numpy(S.render_batch(scenes, RES, jitter=rng)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1


def _resume_stage(d: Path, resume: bool, vae: AutoencoderKL, opt: torch.optim.Optimizer) -> dict:
    """Stage state {step, log}; with `resume` and a checkpoint in `d`, also restores the VAE and optimizer."""
    if not (resume and (d / "state.json").exists()):
        return {"step": 0, "log": []}
    vae.load_state_dict(load_file(str(d / "vae.safetensors")))
    opt.load_state_dict(torch.load(d / "opt.pt", weights_only=True))
    return json.loads((d / "state.json").read_text())


# --------------------------------------------------------------------------- stage 1: VAE
def _autoencoder_loop(d: Path, vae: AutoencoderKL, opt: torch.optim.Optimizer, state: dict, *, steps: int, seed: int,
                      stream: int, batch: int, lr: float, warmup: int, desc: str,
                      loss_fn: Callable[[torch.Tensor, int], tuple[torch.Tensor, dict[str, torch.Tensor]]],
                      clip: list[torch.nn.Parameter] | None = None) -> bool:
    """Shared loop of the VAE stages: fresh renders per step (RNG stream `stream`), warm-up + cosine LR,
    `loss_fn(x, step) -> (loss, extra logged values)`, checkpoint every 250 steps. False if interrupted."""
    stop, t0 = _Stop(), time.time()
    _pid_file(True)
    bar = tqdm(range(state["step"], steps), desc=desc, initial=state["step"], total=steps)
    for step in bar:
        rng = np.random.default_rng([seed, stream, step])
        x = _render_tensor([S.sample_split_scene(rng, "train") for _ in range(batch)], rng)  # (B, 3, 32, 32)
        for gp in opt.param_groups:
            gp["lr"] = _lr(step, lr, warmup, steps)
        loss, extra = loss_fn(x, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(clip, 1.0)
        opt.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", **{k: f"{v.item():.3f}" for k, v in extra.items()})
            state["log"].append({"step": step, "loss": round(loss.item(), 5),
                                 **{k: round(v.item(), 4) for k, v in extra.items()}})
        if (step + 1) % 250 == 0 or step + 1 == steps or stop.flag:
            state["step"], state["wall_s"] = step + 1, state.get("wall_s", 0) + time.time() - t0
            t0 = time.time()
            _save_st(d / "vae.safetensors", vae.state_dict())
            torch.save(opt.state_dict(), d / "opt.pt")
            _save_json(d / "state.json", state)
            if stop.flag:
                break
    _pid_file(False)
    return not stop.flag


def train_vae(out: Path, steps: int, seed: int, resume: bool, batch: int = 32, lr: float = 1e-3) -> AutoencoderKL:
    """Train the KL autoencoder (L1 + MSE + small KL) on freshly rendered training scenes."""
    d = out / "vae_ckpt"
    d.mkdir(parents=True, exist_ok=True)
    vae = build_vae(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=1e-4)
    state = _resume_stage(d, resume, vae, opt)

    def loss_fn(x: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with autocast():
            post = vae.encode(x).latent_dist
            z = post.sample(generator=torch.Generator().manual_seed(seed * 7919 + step))
            rec = vae.decode(z).sample.float()
        kl = post.kl().mean() / x[0].numel()
        return F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 1e-3 * kl, {"kl": kl}

    if not _autoencoder_loop(d, vae, opt, state, steps=steps, seed=seed, stream=1, batch=batch, lr=lr, warmup=100,
                             desc="vae", loss_fn=loss_fn, clip=list(vae.parameters())):
        raise SystemExit("vae: interrupted, checkpoint saved")
    vae.eval()
    # latent scaling factor: 1 / std of posterior means over training scenes
    rng = np.random.default_rng([seed, 2])
    with torch.no_grad():
        z = vae.encode(_render_tensor([S.sample_split_scene(rng, "train") for _ in range(1024)], rng)).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    vae.save_pretrained(out / "vae")
    state["scaling_factor"] = float(1.0 / z.std())
    state["latent_mean"] = float(z.mean())
    _save_json(d / "state.json", state)
    return vae


def train_decoder(out: Path, steps: int, seed: int, resume: bool, batch: int = 32, lr: float = 5e-4) -> None:
    """Fine-tune only the VAE decoder (encoder frozen, so the latent space the transformer learned is unchanged)."""
    d = out / "dec_ckpt"
    d.mkdir(parents=True, exist_ok=True)
    vae = AutoencoderKL.from_pretrained(out / "vae")
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    state = _resume_stage(d, resume, vae, opt)

    def loss_fn(x: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean  # (B, 4, 16, 16)
        with autocast():
            rec = vae.decode(z).sample.float()
        return F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x), {}

    _autoencoder_loop(d, vae, opt, state, steps=steps, seed=seed, stream=5, batch=batch, lr=lr, warmup=50,
                      desc="decoder", loss_fn=loss_fn)
    if state["step"] == steps:
        vae.save_pretrained(out / "vae_finetuned")


# --------------------------------------------------------------------------- stage 2: transformer (+ text encoder)
def _latent_pool(out: Path, vae: AutoencoderKL, n: int, seed: int) -> tuple[torch.Tensor, list[S.Scene]]:
    """Deterministic pool of training scenes and their scaled VAE latent means (N, 4, 16, 16), cached on disk."""
    rng = np.random.default_rng([seed, 3])
    scenes = [S.sample_split_scene(rng, "train") for _ in range(n)]
    f = out / f"latent_pool_{n}_{seed}.safetensors"
    if f.exists():
        return load_file(str(f))["z"], scenes
    zs = []
    with torch.no_grad():
        for i in tqdm(range(0, n, 512), desc="encode pool"):
            x = _render_tensor(scenes[i: i + 512], rng)
            zs.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    z = torch.cat(zs)
    _save_st(f, {"z": z})
    return z, scenes


def _pool_masks(scenes: list[S.Scene], seed: int, size: int = LATENT) -> torch.Tensor:
    """Foreground masks (N, 1, size, size) of the pool scenes, replaying `_latent_pool`'s jitter draws exactly."""
    rng = np.random.default_rng([seed, 3])
    for _ in range(len(scenes)):  # replay the scene draws (rejection sampling consumes the same numbers)
        S.sample_split_scene(rng, "train")
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    x, y = (x + 0.5) / size, (y + 0.5) / size
    masks = np.zeros((len(scenes), 1, size, size), np.float32)
    for i, sc in enumerate(scenes):
        for o in sc.objects:
            cx, cy = S.position_center(o.position)
            cx, cy = cx + rng.uniform(-0.03, 0.03), cy + rng.uniform(-0.03, 0.03)
            r = S.SIZES[o.size] + 1.0 / size  # dilate by one latent pixel
            masks[i, 0] = np.maximum(masks[i, 0], S._mask("square", x, y, cx, cy, r / 0.88))
    return torch.from_numpy(masks)


def scorer():
    """The shapes scorer module eval/shapes_scorer.py (imported on first use: only evaluation and tracking need it)."""
    from eval import shapes_scorer

    return shapes_scorer


def _track(pipe, prompts: list[str], seed: int) -> dict:
    """Adherence (and its components) of a pipeline of EMA weights on a fixed prompt set, bf16, 20 steps, CFG 4.5."""
    sc = scorer()
    if not sc.WEIGHTS.exists():
        return {"skipped": "no scorer weights (run the `scorer` stage first)"}
    with autocast():
        imgs = generate(pipe, prompts, seed=seed)
    return {k: round(v, 4) for k, v in sc.adherence(imgs, prompts).items()}


def draw_indices(g: torch.Generator, n: int, batch: int, groups: tuple[torch.Tensor, torch.Tensor] | None = None,
                 p_two: float | None = None) -> torch.Tensor:
    """Pool indices (batch,) for one step: uniform over the pool, then (with `groups` = single- and two-object
    indices) re-drawn from the two-object group with probability `p_two`, else from the single-object one."""
    idx = torch.randint(0, n, (batch,), generator=g)
    if groups is None or p_two is None:
        return idx
    pick_two = torch.rand(batch, generator=g) < p_two
    u = torch.rand(batch, generator=g)
    single, two = groups
    return torch.where(pick_two, two[(u * len(two)).long()], single[(u * len(single)).long()])


def draw_timesteps(g: torch.Generator, batch: int, t_bias: float = 0.0) -> torch.Tensor:
    """Training timesteps (batch,): uniform, then for `t_bias` B > 0 re-drawn with density ∝ (t/T)^B (inverse CDF)."""
    t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (batch,), generator=g)
    if t_bias <= 0:
        return t
    u = torch.rand(batch, generator=g)
    return (NUM_TRAIN_TIMESTEPS * u ** (1 / (1 + t_bias))).long().clamp(max=NUM_TRAIN_TIMESTEPS - 1)


class _DitModels:
    """Tokenizer, frozen VAE, the trained transformer and T5 encoder, and their EMA copies."""

    def __init__(self, out: Path, seed: int, hidden: int):
        self.tok = build_tokenizer()
        self.vae = AutoencoderKL.from_pretrained(out / "vae").eval().requires_grad_(False)
        self.te, self.dit = build_text_encoder(len(self.tok), seed), build_transformer(seed, hidden=hidden)
        self.te_ema, self.dit_ema = copy.deepcopy(self.te).eval(), copy.deepcopy(self.dit).eval()
        self.params = list(self.dit.parameters()) + list(self.te.parameters())

    def named(self) -> tuple[tuple[str, torch.nn.Module], ...]:
        """The checkpointed modules, by file stem."""
        return ("dit", self.dit), ("te", self.te), ("dit_ema", self.dit_ema), ("te_ema", self.te_ema)


class _DitData:
    """Latent pool, its scenes, foreground masks and single/two-object groups, the schedule and the val prompts."""

    def __init__(self, out: Path, vae: AutoencoderKL, pool: int, seed: int, fg_weight: float, p_two: float | None):
        self.z_pool, self.scenes = _latent_pool(out, vae, pool, seed)
        self.fg_pool = _pool_masks(self.scenes, seed) if fg_weight > 0 else None  # (N, 1, 16, 16)
        self.groups = None
        if p_two is not None:
            two = torch.tensor([len(sc.objects) > 1 for sc in self.scenes])
            self.groups = (torch.nonzero(~two).flatten(), torch.nonzero(two).flatten())  # single-, two-object indices
        self.ab = build_scheduler().alphas_cumprod  # (1000,)
        self.val_prompts = [c for _, c in S.split_prompts("val", 64, seed=seed + 11, n_objects=1)]


def _resume_dit(d: Path, resume: bool, m: _DitModels, opt: torch.optim.Optimizer, fg_weight: float,
                fg_from: int) -> dict:
    """Stage state {step, log, adherence, wall_s}; with `resume` and a checkpoint in `d`, also restores the models."""
    if not (resume and (d / "state.json").exists()):
        return {"step": 0, "log": [], "adherence": [], "wall_s": 0.0}
    state = json.loads((d / "state.json").read_text())
    state.setdefault("resumed_at", []).append({"step": state["step"], "why": state.pop("stopped_early", None),
                                               "fg_weight": fg_weight, "fg_from": fg_from})
    for name, mod in m.named():
        mod.load_state_dict(load_file(str(d / f"{name}.safetensors")))
    opt.load_state_dict(torch.load(d / "opt.pt", weights_only=True))
    return state


def _save_dit(d: Path, m: _DitModels, opt: torch.optim.Optimizer, state: dict, step: int, wall_s: float) -> None:
    """Checkpoint the models, the optimizer and the stage state after `step` steps."""
    state["step"], state["wall_s"] = step, wall_s
    for name, mod in m.named():
        _save_st(d / f"{name}.safetensors", mod.state_dict())
    torch.save(opt.state_dict(), d / "opt.pt")
    _save_json(d / "state.json", state)


def _dit_batch(data: _DitData, tok, step: int, seed: int, batch: int, p_two: float | None, t_bias: float,
               min_snr: float) -> tuple:
    """One step's draws (generators seeded by step): pool indices, tokenized captions (CFG dropout), timesteps,
    noised latents, v targets and min-SNR loss weights."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    rng = np.random.default_rng([seed, 4, step])
    idx = draw_indices(g, len(data.z_pool), batch, data.groups, p_two)
    x0 = data.z_pool[idx]  # (B, 4, 16, 16)
    caps = ["" if rng.random() < P_UNCOND else S.caption(data.scenes[i], int(rng.integers(S.NUM_TEMPLATES)))
            for i in idx.tolist()]
    ti = tok(caps, padding="max_length", max_length=TEXT_LEN, truncation=True, return_tensors="pt")
    t = draw_timesteps(g, batch, t_bias)
    ab = data.ab
    a = ab[t].sqrt().view(-1, 1, 1, 1)
    s = (1 - ab[t]).sqrt().view(-1, 1, 1, 1)
    eps = torch.randn(x0.shape, generator=g)
    xt, v = a * x0 + s * eps, a * eps - s * x0
    snr = ab[t] / (1 - ab[t])
    w = (snr.clamp(max=min_snr) / (snr + 1)).view(-1, 1, 1, 1)  # min-SNR-gamma for v-prediction
    if min_snr <= 0:
        w = torch.ones_like(w)
    return idx, ti, t, xt, v, w


def _dit_update(m: _DitModels, opt: torch.optim.Optimizer, ti, t: torch.Tensor, xt: torch.Tensor, v: torch.Tensor,
                w: torch.Tensor, decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on the weighted v-loss (bf16 autocast where fast, grad clip 1) and the EMA update -> loss, grad norm."""
    with autocast():
        emb = m.te(ti.input_ids, attention_mask=ti.attention_mask).last_hidden_state  # (B, L, 128)
        pred = m.dit(xt, encoder_hidden_states=emb, encoder_attention_mask=ti.attention_mask, timestep=t,
                     added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample  # (B, 4, 16, 16)
    loss = (w * (pred.float() - v) ** 2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(m.params, 1.0)
    opt.step()
    _ema_update(m.dit_ema, m.dit, decay)
    _ema_update(m.te_ema, m.te, decay)
    return loss, gn


@dataclass(frozen=True)
class Arch:
    """What the transformer stage needs of one architecture (the loop, checkpoints and tracking are shared)."""

    name: str
    models: Callable[[Path, int, int], Any]  # (out, seed, hidden) -> models with .tok, .named(), .params
    batch: Callable[..., tuple]  # (data, tok, step, seed, batch, p_two, t_bias, min_snr) -> idx, ti, t, xt, target, w
    update: Callable[..., tuple[torch.Tensor, torch.Tensor]]  # (m, opt, ti, t, xt, target, w, decay) -> loss, gn
    pipeline: Callable[[Any], Any]  # models -> a pipeline of the EMA weights (tracking)
    export: Callable[[Path, Path, int, str], Path]  # (out, export_dir, seed, command) -> the saved pipeline folder
    fg_map: Callable[[torch.Tensor], torch.Tensor] = lambda mask: mask  # (B, 1, 16, 16) mask -> loss-weight layout


PIXART = Arch("pixart", _DitModels, _dit_batch, _dit_update,
              lambda m: make_pipeline(m.tok, m.te_ema, m.vae, m.dit_ema), lambda *a: export(*a))


def arch(name: str) -> Arch:
    """The architecture of `--arch` (the FLUX one imports diffusers' Flux classes on first use)."""
    if name == "flux":
        from training import flux

        return flux.FLUX
    return PIXART


def train_dit(out: Path, steps: int, seed: int, resume: bool, batch: int = 64, lr: float = 1e-3, warmup: int = 200,
              ema_decay: float = 0.999, min_snr: float = 5.0, pool: int = 40000, eval_every: int = 500,
              max_minutes: float = 0.0, hidden: int = 128, fg_weight: float = 0.0, fg_from: int = 0,
              p_two: float | None = None, t_bias: float = 0.0, arch: Arch = PIXART) -> bool:
    """Train the transformer and the text encoder(s) jointly (PixArt: v-prediction with min-SNR weighting; FLUX:
    rectified flow, see training/flux.py), EMA, CFG dropout.

    `fg_weight` > 0 multiplies the loss on object pixels by (1 + fg_weight) from step `fg_from` on: objects cover only
    ~3-10 % of the image, so without it the loss (and learning) is dominated by the background.
    `p_two`: probability that a sample is a two-object scene (None: the pool's own mix, ~0.4).
    `min_snr` <= 0: uniform v-loss weight instead of min-SNR-γ. `t_bias` B > 0 draws timesteps with density
    ∝ (t/T)^B (more high-noise steps, where the layout is decided); 0 = uniform.
    Returns False when a signal stopped it (the stage is not done: resume it with --resume), else True.
    """
    d = out / "dit_ckpt"
    d.mkdir(parents=True, exist_ok=True)
    m = arch.models(out, seed, hidden)
    opt = torch.optim.AdamW(m.params, lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    state = _resume_dit(d, resume, m, opt, fg_weight, fg_from)
    data = _DitData(out, m.vae, pool, seed, fg_weight, p_two)
    stop, t0 = _Stop(), time.time()
    wall0 = state["wall_s"]
    _pid_file(True)
    bar = tqdm(range(state["step"], steps), desc="dit", initial=state["step"], total=steps)
    ema_loss = None
    for step in bar:
        idx, ti, t, xt, v, w = arch.batch(data, m.tok, step, seed, batch, p_two, t_bias, min_snr)
        # progress = steps done, or wall time used if a --max-minutes budget runs out first (LR tail still happens)
        elapsed = wall0 + time.time() - t0
        eff = step if max_minutes <= 0 else max(step, int(steps * elapsed / (60 * max_minutes)))
        for gp in opt.param_groups:
            gp["lr"] = _lr(eff, lr, warmup, steps)
        if data.fg_pool is not None and step >= fg_from:
            w = w * (1 + fg_weight * arch.fg_map(data.fg_pool[idx]))  # (B, 1, 16, 16) or packed
        loss, gn = arch.update(m, opt, ti, t, xt, v, w, min(ema_decay, (1 + step) / (10 + step)))
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema_loss:.4f}", lr=f"{opt.param_groups[0]['lr']:.1e}", refresh=False)
        if step % 25 == 0:
            state["log"].append({"step": step, "loss": round(ema_loss, 5), "grad_norm": round(float(gn), 3),
                                 "wall_s": round(wall0 + time.time() - t0, 1)})
        done = step + 1 == steps
        over = max_minutes > 0 and (wall0 + time.time() - t0) > 60 * max_minutes
        if (step + 1) % eval_every == 0 or done or over or stop.flag:
            adh = _track(arch.pipeline(m), data.val_prompts, seed)
            adh.update(step=step + 1, wall_s=round(wall0 + time.time() - t0, 1))
            state["adherence"].append(adh)
            tqdm.write(f"step {step + 1}: val adherence {adh}")
        if (step + 1) % 250 == 0 or done or stop.flag or over:
            _save_dit(d, m, opt, state, step + 1, round(wall0 + time.time() - t0, 1))
            if stop.flag or over:
                state["stopped_early"] = "time budget" if over else "signal"
                _save_json(d / "state.json", state)
                break
    _pid_file(False)
    return not stop.flag


# --------------------------------------------------------------------------- stage 3: export
def export(out: Path, export_dir: Path, seed: int = 0, command: str = "") -> Path:
    """Assemble the pipeline from the VAE and the EMA transformer/text encoder; save as fp16 safetensors."""
    d = out / "dit_ckpt"
    tok = build_tokenizer()
    vae_dir = out / "vae_finetuned" if (out / "vae_finetuned").exists() else out / "vae"
    vae = AutoencoderKL.from_pretrained(vae_dir)
    state = json.loads((d / "state.json").read_text())
    hidden = load_file(str(d / "dit_ema.safetensors"))["proj_out.weight"].shape[1]
    te, dit = build_text_encoder(len(tok), seed), build_transformer(seed, hidden=hidden)
    te.load_state_dict(load_file(str(d / "te_ema.safetensors")))
    dit.load_state_dict(load_file(str(d / "dit_ema.safetensors")))
    pipe = make_pipeline(tok, te, vae, dit).to(dtype=torch.float16)
    export_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(export_dir, safe_serialization=True)
    vstate = json.loads((out / "vae_ckpt" / "state.json").read_text())
    dec = out / "dec_ckpt" / "state.json"
    dstate = json.loads(dec.read_text()) if dec.exists() and vae_dir.name == "vae_finetuned" else None
    log = {"command": command, "seed": seed, "vae": {k: v for k, v in vstate.items() if k != "log"},
           "decoder_finetune": dstate,
           "vae_loss": vstate["log"][:: max(1, len(vstate["log"]) // 50)],
           "dit": {k: v for k, v in state.items() if k not in ("log", "adherence")},
           "dit_loss": state["log"][:: max(1, len(state["log"]) // 100)], "adherence": state["adherence"]}
    _save_json(export_dir / "training_log.json", log)
    return export_dir


# --------------------------------------------------------------------------- evaluation and figure
def load_pipeline(model: Path | str, dtype: torch.dtype = torch.float32) -> PixArtAlphaPipeline:
    """Load a saved shapes pipeline (PixArt or FLUX) offline, with its call defaults (progress bar off)."""
    return zoo.load(str(model), dtype=dtype)


def initial_pipeline(model: Path | str, seed: int = 0) -> PixArtAlphaPipeline:
    """The untrained initial model: trained VAE/tokenizer of `model`, freshly initialised transformer and text
    encoder(s)."""
    pipe = load_pipeline(model)
    if pipe.GUIDANCE_KWARG == "true_cfg_scale":
        from training import flux

        return flux.initial_pipeline(pipe, seed)
    te = build_text_encoder(len(pipe.tokenizer), seed)
    dit = build_transformer(seed, hidden=pipe.transformer.config.num_attention_heads
                            * pipe.transformer.config.attention_head_dim, layers=pipe.transformer.config.num_layers,
                            heads=pipe.transformer.config.num_attention_heads)
    torch.manual_seed(seed)
    torch.nn.init.normal_(dit.proj_out.weight, std=0.02)  # zero-init output would give a constant image
    return make_pipeline(pipe.tokenizer, te, pipe.vae, dit)


def shape_errors(preds: list, prompts: list[str]) -> dict:
    """Shape accuracy by object size, and the confusions 'true->read' (single-object prompts)."""
    by_size: dict[str, list[int]] = {}
    confusions: Counter[str] = Counter()
    for pred, p in zip(preds, prompts):
        t = S.parse_caption(p).objects[0]
        read = pred.objects[0].shape if pred.objects else "none"
        ok = by_size.setdefault(t.size, [0, 0])
        ok[0], ok[1] = ok[0] + (read == t.shape), ok[1] + 1
        if read != t.shape:
            confusions[f"{t.shape}->{read}"] += 1
    return {"shape_accuracy_by_size": {k: round(a / n, 4) for k, (a, n) in sorted(by_size.items())},
            "n_by_size": {k: n for k, (_, n) in sorted(by_size.items())},
            "confusions": dict(confusions.most_common())}


def evaluate(model: Path, num_prompts: int = 256, seed: int = 0, steps: int = 20, guidance: float = 4.5,
             n_real: int = 2048, with_initial: bool = True, split: str = "heldout", two_objects: int = 0) -> dict:
    """Adherence on single-object prompts of `split` (held-out by default; 'val' for tuning sampler settings)
    + shapes-FID vs real renders of the same split (trained and initial); with `two_objects` N > 0, also the
    trained model's adherence on N two-object prompts."""
    sc = scorer()
    adherence, load_classifier, shapes_fid = sc.adherence, sc.load_classifier, sc.shapes_fid

    torch.set_num_threads(2)
    clf = load_classifier()
    prompts = [c for _, c in S.split_prompts(split, num_prompts, seed=seed, n_objects=1)]
    rng = np.random.default_rng([seed, 99])
    real_scenes = [S.sample_split_scene(rng, split, 0.0) for _ in range(n_real)]
    real = torch.from_numpy(S.render_batch(real_scenes, RES, jitter=rng)).permute(0, 3, 1, 2).contiguous()
    res = {"split": split, "num_prompts": len(prompts), "steps": steps, "guidance": guidance, "seed": seed,
           "n_real": n_real}
    t0 = time.time()
    imgs = generate(load_pipeline(model), prompts, seed=seed, steps=steps, guidance=guidance)
    res["gen_time_s"] = round(time.time() - t0, 1)
    res["trained"] = {k: round(v, 4) for k, v in adherence(imgs, prompts, clf).items()}
    res["trained"]["shapes_fid"] = round(shapes_fid(imgs, real, clf), 3)
    res["trained_shape_errors"] = shape_errors(sc.predict(imgs, clf), prompts)
    if two_objects > 0:  # two-object prompts of the same split (count, and attributes matched per object)
        prompts2 = [c for _, c in S.split_prompts(split, two_objects, seed=seed + 1, n_objects=2)]
        imgs2 = generate(load_pipeline(model), prompts2, seed=seed, steps=steps, guidance=guidance)
        res["trained_two_objects"] = {k: round(v, 4) for k, v in adherence(imgs2, prompts2, clf).items()}
    if with_initial:
        imgs0 = generate(initial_pipeline(model, seed), prompts, seed=seed, steps=steps, guidance=guidance)
        res["initial"] = {k: round(v, 4) for k, v in adherence(imgs0, prompts, clf).items()}
        res["initial"]["shapes_fid"] = round(shapes_fid(imgs0, real, clf), 3)
    # reference: FID between two disjoint real sets of the same size as the generated set
    rng2 = np.random.default_rng([seed, 98])
    real2 = S.render_batch([S.sample_split_scene(rng2, split, 0.0) for _ in range(len(prompts))], RES, jitter=rng2)
    res["real_vs_real_fid"] = round(shapes_fid(torch.from_numpy(real2).permute(0, 3, 1, 2).contiguous(), real, clf), 3)
    return res


@torch.no_grad()
def vae_eval(out: Path, n: int = 512, seed: int = 0) -> dict:
    """Scorer adherence of VAE reconstructions of held-out single-object renders (base VAE and fine-tuned decoder)."""
    sc = scorer()
    rng = np.random.default_rng([seed, 97])
    scenes = [S.sample_split_scene(rng, "heldout", 0.0) for _ in range(n)]
    x = _render_tensor(scenes, None)  # (n, 3, 32, 32) in [-1, 1]
    prompts = [S.caption(s, 0) for s in scenes]
    res = {"n": n, "real": {k: round(v, 4) for k, v in sc.adherence(_to_u8(x), prompts).items()}}
    for name in ("vae", "vae_finetuned"):
        if (out / name).exists():
            vae = AutoencoderKL.from_pretrained(out / name).eval()
            rec = torch.cat([vae.decode(vae.encode(x[i:i + 128]).latent_dist.mean).sample for i in range(0, n, 128)])
            res[name] = {k: round(v, 4) for k, v in sc.adherence(_to_u8(rec), prompts).items()}
            res[name]["mse"] = round(float(F.mse_loss(rec.clamp(-1, 1), x)), 5)
    return res


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float (N, 3, H, W) -> uint8."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def grid(model: Path, path: Path, seed: int = 0, guidance: float = 4.5) -> Path:
    """Save a 4x4 grid of 16 held-out prompts with captions under the tiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prompts = [c for _, c in S.split_prompts("heldout", 16, seed=seed + 5, n_objects=None)]
    imgs = generate(load_pipeline(model), prompts, seed=seed, guidance=guidance)
    fig, axes = plt.subplots(4, 4, figsize=(12, 13.5))
    for ax, im, p in zip(axes.flat, imgs, prompts):
        ax.imshow(im.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        words, lines, cur = p.split(), [], ""
        for w in words:  # wrap captions at ~34 characters
            if len(cur) + len(w) > 34:
                lines.append(cur)
                cur = w
            else:
                cur = (cur + " " + w).strip()
        ax.set_xlabel("\n".join([*lines, cur]), fontsize=8.5)
    solver = "Euler" if "FlowMatch" in type(load_pipeline(model).scheduler).__name__ else "DPM-Solver"
    fig.suptitle(f"{Path(model).name}: 16 held-out prompts (20 {solver} steps, CFG {guidance}, 32x32)", fontsize=12)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path


# --------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    """The command-line options of all stages."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", nargs="?", default="all",
                    choices=["all", "vae", "dit", "decoder", "export", "scorer", "evaluate", "grid", "vae-eval"])
    ap.add_argument("--out", type=Path, default=Path("runs/tiny-pixart-shapes"), help="work dir (checkpoints)")
    ap.add_argument("--export-dir", type=Path, default=None, help="pipeline output dir (default <out>/pipeline)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arch", default="pixart", choices=["pixart", "flux"],
                    help="pixart: tiny-pixart-shapes; flux: tiny-flux-shapes (reuses the shipped VAE: stages dit, "
                         "export; see training/flux.py)")
    ap.add_argument("--vae-steps", type=int, default=1500)
    ap.add_argument("--steps", type=int, default=3000, help="transformer steps")
    ap.add_argument("--dec-steps", type=int, default=0, help="decoder-only fine-tune steps (0: skip)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--fg-weight", type=float, default=0.0, help="extra loss weight on object pixels")
    ap.add_argument("--fg-from", type=int, default=0, help="step from which --fg-weight applies")
    ap.add_argument("--min-snr", type=float, default=5.0, help="dit: min-SNR-γ loss weighting (<= 0: uniform v-loss)")
    ap.add_argument("--t-bias", type=float, default=0.0,
                    help="dit: timestep density ∝ (t/T)^B, B > 0 favours high noise (default 0: uniform)")
    ap.add_argument("--p-two", type=float, default=None,
                    help="dit: probability of a two-object training sample (default: the pool's mix, ~0.4)")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--pool", type=int, default=40000, help="number of pre-encoded training scenes")
    ap.add_argument("--max-minutes", type=float, default=0.0, help="stop the dit stage after this wall time")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 can be faster on a busy machine)")
    ap.add_argument("--scorer-steps", type=int, default=3000)
    ap.add_argument("--model", type=Path, default=ZOO_DIR / DEFAULT_MODEL)
    ap.add_argument("--num-prompts", type=int, default=256)
    ap.add_argument("--guidance", type=float, default=4.5, help="evaluate/grid: CFG scale")
    ap.add_argument("--no-initial", action="store_true", help="evaluate: skip the untrained baseline")
    ap.add_argument("--two-objects", type=int, default=0, help="evaluate: also score N two-object prompts")
    ap.add_argument("--split", default="heldout", choices=["heldout", "val"],
                    help="evaluate: prompt split (default heldout, the quality bar; val for tuning sampler settings)")
    ap.add_argument("--json", type=Path, default=None, help="evaluate: also write results here")
    ap.add_argument("--grid-path", type=Path, default=Path("docs/tiny-pixart-shapes-grid.png"))
    return ap


def _train_stages(a: argparse.Namespace, command: str) -> None:
    """The training stages: scorer, vae, dit, decoder, export (`all` = vae -> dit -> [decoder] -> export)."""
    if a.stage == "scorer":
        from training.scorer import WEIGHTS
        from training.scorer import train as train_scorer

        print(json.dumps(train_scorer(WEIGHTS, steps=a.scorer_steps, seed=a.seed), indent=1))
    flux = a.arch == "flux"
    if flux and a.stage in ("vae", "decoder"):
        raise SystemExit(f"--arch flux reuses the shipped VAE: there is no {a.stage} stage (use dit or export)")
    if a.stage in ("all", "vae") and not flux:
        train_vae(a.out, a.vae_steps, a.seed, a.resume)
    done = a.stage not in ("all", "dit") or train_dit(
        a.out, a.steps, a.seed, a.resume, batch=a.batch, lr=a.lr, warmup=a.warmup, ema_decay=a.ema, pool=a.pool,
        eval_every=a.eval_every, max_minutes=a.max_minutes, hidden=a.hidden, fg_weight=a.fg_weight, fg_from=a.fg_from,
        p_two=a.p_two, min_snr=a.min_snr, t_bias=a.t_bias, arch=arch(a.arch))
    if not done:
        raise SystemExit("stopped by a signal: checkpoint saved; rerun the same command with --resume")
    if not flux and (a.stage == "decoder" or (a.stage == "all" and a.dec_steps > 0)):
        train_decoder(a.out, a.dec_steps, a.seed, a.resume)
    if a.stage in ("all", "export"):
        export_fn = arch(a.arch).export
        print("exported to", export_fn(a.out, a.export_dir or a.out / "pipeline", a.seed, command))


def _eval_stages(a: argparse.Namespace) -> None:
    """The evaluation stages: evaluate, vae-eval, grid."""
    if a.stage == "evaluate":
        res = evaluate(a.model, a.num_prompts, a.seed, guidance=a.guidance, with_initial=not a.no_initial,
                       split=a.split, two_objects=a.two_objects)
        print(json.dumps(res, indent=1))
        if a.json:
            _save_json(a.json, res)
    if a.stage == "vae-eval":
        print(json.dumps(vae_eval(a.out, seed=a.seed), indent=1))
    if a.stage == "grid":
        print("saved", grid(a.model, a.grid_path, a.seed, a.guidance))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    import sys

    a = _parser().parse_args(argv)
    torch.set_num_threads(a.threads)
    command = "python -m training.train " + " ".join(sys.argv[1:] if argv is None else argv)
    _train_stages(a, command)
    _eval_stages(a)


if __name__ == "__main__":
    main()
