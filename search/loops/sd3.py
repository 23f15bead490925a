"""Stable Diffusion 3 (`StableDiffusion3Pipeline`): flow-matching Euler, batched CFG (uncond first), joint
blocks; the transformer gets the pooled CLIP vector and the joint (CLIP + T5) text sequence."""

from __future__ import annotations

from typing import Any

import torch
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (
    calculate_shift,
    retrieve_timesteps,
)

from .base import DenoiseLoop


class SD3Loop(DenoiseLoop):
    """`StableDiffusion3Pipeline.__call__` (no skip-layer guidance), one step at a time."""

    family = "sd3"
    pipeline_names = ("StableDiffusion3Pipeline",)
    supported = ("guidance_scale", "negative_prompt", "height", "width", "max_sequence_length")

    def encode(self) -> None:
        pipe = self.pipe
        self.height = self.arg("height") or pipe.default_sample_size * pipe.vae_scale_factor
        self.width = self.arg("width") or pipe.default_sample_size * pipe.vae_scale_factor
        self.cfg = self.guidance_scale > 1
        pe, npe, pooled, npooled = pipe.encode_prompt(
            prompt=self.prompts, prompt_2=None, prompt_3=None, negative_prompt=self.arg("negative_prompt"),
            do_classifier_free_guidance=self.cfg, device=self.device, clip_skip=None, num_images_per_prompt=1,
            max_sequence_length=self.arg("max_sequence_length"),
        )
        if self.cfg:
            pe, pooled = torch.cat([npe, pe], 0), torch.cat([npooled, pooled], 0)  # (2B, T, D), (2B, P)
        self.prompt_embeds, self.pooled = pe, pooled

    def prepare_latents(self, generators: list[torch.Generator]) -> torch.Tensor:
        pipe = self.pipe
        return pipe.prepare_latents(len(self.prompts), pipe.transformer.config.in_channels, self.height, self.width,
                                    self.prompt_embeds.dtype, self.device, generators)  # (B, C, h, w)

    def set_timesteps(self, sched: Any) -> None:
        kw: dict[str, Any] = {}
        if sched.config.get("use_dynamic_shifting", None):
            vs, p = self.pipe.vae_scale_factor, self.pipe.transformer.config.patch_size
            seq = (int(self.height) // vs // p) * (int(self.width) // vs // p)
            c = sched.config
            kw["mu"] = calculate_shift(seq, c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                                       c.get("base_shift", 0.5), c.get("max_shift", 1.16))
        retrieve_timesteps(sched, self.steps, self.device, **kw)

    def _inputs(self, x: torch.Tensor, t: torch.Tensor) -> dict[str, Any]:
        b = x.shape[0]
        return {"hidden_states": x, "timestep": t.expand(b), "encoder_hidden_states": self.prompt_embeds[:b],
                "pooled_projections": self.pooled[:b], "joint_attention_kwargs": None}

    def predict(self, latents: torch.Tensor, t: torch.Tensor, sched: Any) -> torch.Tensor:
        x = torch.cat([latents] * 2) if self.cfg else latents
        noise = self.pipe.transformer(**self._inputs(x, t), return_dict=False)[0]
        if self.cfg:
            un, tx = noise.chunk(2)
            noise = un + self.guidance_scale * (tx - un)
        return noise

    def cost_calls(self) -> list[tuple[tuple, dict[str, Any]]]:
        vs, c = self.pipe.vae_scale_factor, self.pipe.transformer.config
        x = torch.zeros(2 if self.cfg else 1, c.in_channels, self.height // vs, self.width // vs)
        return [((), self._inputs(x, torch.zeros(())))]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        pipe = self.pipe
        lat = latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
        with torch.inference_mode():
            img = pipe.vae.decode(lat, return_dict=False)[0]
        return pipe.image_processor.postprocess(img, output_type="pt")
