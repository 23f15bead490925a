"""A step-by-step PixArt denoising loop built from the pipeline's parts, with resumable state.

`PixArtLoop` reproduces ``PixArtAlphaPipeline.__call__(prompts, generator=[...], output_type="latent")``
bit for bit (tested), but exposes one step at a time, so a search can stop after step k, keep the
state (latents, a deep copy of the scheduler, the cache snapshot) and resume other candidates from it.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import retrieve_timesteps

GUIDANCE_SCALE = 4.5  # PixArtAlphaPipeline's default


@dataclass
class LoopState:
    """Everything a generation needs to continue after `step` (-1 = before step 0)."""

    step: int
    latents: torch.Tensor  # (B, C, h, w)
    scheduler: Any  # deep copy (DPM-Solver keeps a history of model outputs)
    generator_states: list[torch.Tensor]
    cache: dict[str, Any] | None  # CacheHandle.snapshot(), None before step 0


def pipeline_size(pipe: Any) -> tuple[int, int]:
    """(height, width) in pixels a search generates at: the model's native size (as `pipe()` by default)."""
    size = pipe.transformer.config.sample_size * pipe.vae_scale_factor
    return size, size


class PixArtLoop:
    """Denoise a fixed batch of prompts (one seed each) step by step with a PixArt pipeline."""

    @classmethod
    def from_call_defaults(cls, pipe: Any, prompts: list[str], seeds: list[int], steps: int,
                           defaults: dict[str, Any]) -> PixArtLoop:
        """The loop of `pipe(prompts, **defaults)` (guidance scale, text length, height / width from `defaults`)."""
        size = (defaults["height"], defaults["width"]) if "height" in defaults and "width" in defaults else None
        return cls(pipe, prompts, seeds, steps, defaults.get("guidance_scale", GUIDANCE_SCALE),
                   defaults.get("max_sequence_length"), size)

    def __init__(self, pipe: Any, prompts: list[str], seeds: list[int], steps: int,
                 guidance_scale: float = GUIDANCE_SCALE, max_sequence_length: int | None = None,
                 size: tuple[int, int] | None = None) -> None:
        if "PixArt" not in type(pipe).__name__:
            raise ValueError(
                f"search runs its own denoising loop for PixArt pipelines; got {type(pipe).__name__}. "
                "Use a PixArt-α/Σ pipeline (e.g. --model tiny)"
            )
        if len(prompts) != len(seeds) or not prompts:
            raise ValueError(f"need one seed per prompt, got {len(prompts)} prompts and {len(seeds)} seeds")
        self.sigma = "Sigma" in type(pipe).__name__
        if max_sequence_length is None:  # the pipelines' defaults
            max_sequence_length = 300 if self.sigma else 120
        self.max_sequence_length = max_sequence_length
        self.pipe, self.steps, self.guidance_scale = pipe, steps, guidance_scale
        self.prompts, self.seeds = list(prompts), list(seeds)
        self.device = pipe._execution_device
        self.cfg = guidance_scale > 1.0
        with torch.no_grad():
            pe, pm, npe, npm = pipe.encode_prompt(
                self.prompts, self.cfg, negative_prompt="", num_images_per_prompt=1, device=self.device,
                clean_caption=False, max_sequence_length=max_sequence_length,
            )
        if self.cfg:
            pe, pm = torch.cat([npe, pe], 0), torch.cat([npm, pm], 0)  # (2B, T, D), (2B, T)
        self.prompt_embeds, self.prompt_mask = pe, pm
        self.height, self.width = size or pipeline_size(pipe)
        sd = pipe.transformer.config.sample_size
        self.added_cond_kwargs: dict[str, Any] = {"resolution": None, "aspect_ratio": None}
        if sd == 128 and not self.sigma:  # PixArt-α 1024 px micro-conditions (Σ passes None)
            n = len(self.prompts) * (2 if self.cfg else 1)
            res = torch.tensor([self.height, self.width]).repeat(n, 1).to(pe.dtype)
            ar = torch.tensor([float(self.height / self.width)]).repeat(n, 1).to(pe.dtype)
            self.added_cond_kwargs = {"resolution": res, "aspect_ratio": ar}

    # -- state ------------------------------------------------------------------------------
    def initial_state(self) -> LoopState:
        """Noise from the seeds and a fresh scheduler set to `steps` timesteps."""
        gens = [torch.Generator("cpu").manual_seed(s) for s in self.seeds]
        sched = copy.deepcopy(self.pipe.scheduler)
        timesteps, n = retrieve_timesteps(sched, self.steps, self.device)
        if n != self.steps or len(timesteps) != self.steps:
            raise ValueError(f"scheduler {type(sched).__name__} gives {len(timesteps)} timesteps for {self.steps} steps")
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(0)
        latents = self.pipe.prepare_latents(
            len(self.prompts), self.pipe.transformer.config.in_channels, self.height, self.width,
            self.prompt_embeds.dtype, self.device, gens, None,
        )
        self._accepts_generator = "generator" in inspect.signature(sched.step).parameters
        return LoopState(-1, latents, sched, [g.get_state() for g in gens], None)

    def _generators(self, state: LoopState) -> list[torch.Generator]:
        gens = []
        for st in state.generator_states:
            g = torch.Generator("cpu")
            g.set_state(st)
            gens.append(g)
        return gens

    def step(self, state: LoopState, handle: Any | None = None) -> LoopState:
        """Run step `state.step + 1`; returns a new state (the input state is not modified)."""
        i = state.step + 1
        sched = copy.deepcopy(state.scheduler)
        t = sched.timesteps[i]
        latents = state.latents
        pipe = self.pipe
        lmi = torch.cat([latents] * 2) if self.cfg else latents  # (2B, C, h, w)
        lmi = sched.scale_model_input(lmi, t)
        ct = t[None].to(lmi.device) if torch.is_tensor(t) and t.ndim == 0 else t
        if not torch.is_tensor(ct):
            ct = torch.tensor([ct], device=lmi.device)
        ct = ct.expand(lmi.shape[0])
        with torch.no_grad():
            noise = pipe.transformer(
                lmi, encoder_hidden_states=self.prompt_embeds, encoder_attention_mask=self.prompt_mask,
                timestep=ct, added_cond_kwargs=self.added_cond_kwargs, return_dict=False,
            )[0]
        if self.cfg:
            un, tx = noise.chunk(2)
            noise = un + self.guidance_scale * (tx - un)
        if pipe.transformer.config.out_channels // 2 == pipe.transformer.config.in_channels:
            noise = noise.chunk(2, dim=1)[0]  # learned sigma: keep the epsilon half
        gens = self._generators(state)
        kw = {"generator": gens} if getattr(self, "_accepts_generator", False) else {}
        out = sched.step(noise, t, latents, return_dict=False, **kw)
        latents = out[1] if self.steps == 1 else out[0]
        cache = handle.snapshot() if handle is not None else None
        return LoopState(i, latents, sched, [g.get_state() for g in gens], cache)

    def run(self, handle: Any | None = None) -> torch.Tensor:
        """All steps from noise; final latents (B, C, h, w)."""
        state = self.initial_state()
        if handle is not None:
            handle.reset()
        for _ in range(self.steps):
            state = self.step(state, handle)
        return state.latents

    def call_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `pipe(...)` that generate the same batch (used to check faithfulness)."""
        return {
            "prompt": self.prompts, "num_inference_steps": self.steps, "guidance_scale": self.guidance_scale,
            "generator": [torch.Generator("cpu").manual_seed(s) for s in self.seeds], "output_type": "latent",
            "height": self.height, "width": self.width, "use_resolution_binning": False, "clean_caption": False,
            "max_sequence_length": self.max_sequence_length,
        }
