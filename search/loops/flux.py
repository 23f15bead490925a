"""FLUX.1 (`FluxPipeline`): flow-matching Euler with the resolution-dependent shift, packed 2x2 latents,
the guidance embedding, and true CFG (`true_cfg_scale > 1` with a negative prompt: separate cond / uncond
transformer calls, cond first)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

from .base import DenoiseLoop


class FluxLoop(DenoiseLoop):
    """`FluxPipeline.__call__`, one step at a time."""

    family = "flux"
    pipeline_names = ("FluxPipeline",)
    supported = ("guidance_scale", "true_cfg_scale", "negative_prompt", "height", "width", "max_sequence_length")

    def encode(self) -> None:
        pipe = self.pipe
        self.height = self.arg("height") or pipe.default_sample_size * pipe.vae_scale_factor
        self.width = self.arg("width") or pipe.default_sample_size * pipe.vae_scale_factor
        msl = self.arg("max_sequence_length")
        self.true_cfg = float(self.arg("true_cfg_scale"))
        neg = self.arg("negative_prompt")
        self.cfg = self.true_cfg > 1 and neg is not None
        self.embeds = pipe.encode_prompt(prompt=self.prompts, prompt_2=None, device=self.device,
                                         num_images_per_prompt=1, max_sequence_length=msl)  # (pe, pooled, ids)
        self.neg_embeds = None
        if self.cfg:
            negs = [neg] * len(self.prompts) if isinstance(neg, str) else list(neg)  # one per prompt
            self.neg_embeds = pipe.encode_prompt(prompt=negs, prompt_2=None, device=self.device,
                                                 num_images_per_prompt=1, max_sequence_length=msl)
        self.img_ids: torch.Tensor | None = None

    def pipe_kwargs(self) -> dict[str, Any]:
        neg = self.arg("negative_prompt")
        kw = super().pipe_kwargs()
        return {**kw, "negative_prompt": [neg] * len(self.prompts) if isinstance(neg, str) else neg}

    def prepare_latents(self, generators: list[torch.Generator]) -> torch.Tensor:
        pipe = self.pipe
        latents, self.img_ids = pipe.prepare_latents(len(self.prompts), pipe.transformer.config.in_channels // 4,
                                                     self.height, self.width, self.embeds[0].dtype, self.device,
                                                     generators)
        return latents  # (B, N, 64)

    def _seq_len(self) -> int:
        vs = self.pipe.vae_scale_factor
        return (int(self.height) // (vs * 2)) * (int(self.width) // (vs * 2))

    def set_timesteps(self, sched: Any) -> None:
        sigmas = np.linspace(1.0, 1 / self.steps, self.steps)
        if getattr(sched.config, "use_flow_sigmas", False):
            sigmas = None
        c = sched.config
        mu = calculate_shift(self._seq_len(), c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                             c.get("base_shift", 0.5), c.get("max_shift", 1.15))
        retrieve_timesteps(sched, self.steps, self.device, sigmas=sigmas, mu=mu)
        sched.set_begin_index(0)

    def _inputs(self, latents: torch.Tensor, t: torch.Tensor, embeds: tuple) -> dict[str, Any]:
        pe, pooled, txt_ids = embeds
        b = latents.shape[0]
        guidance = None
        if self.pipe.transformer.config.guidance_embeds:
            guidance = torch.full([1], self.guidance_scale, device=self.device, dtype=torch.float32).expand(b)
        timestep = t.expand(b).to(latents.dtype)
        return {"hidden_states": latents, "timestep": timestep / 1000, "guidance": guidance,
                "pooled_projections": pooled[:b], "encoder_hidden_states": pe[:b], "txt_ids": txt_ids,
                "img_ids": self.img_ids, "joint_attention_kwargs": {}}

    def predict(self, latents: torch.Tensor, t: torch.Tensor, sched: Any) -> torch.Tensor:
        tr = self.pipe.transformer
        noise = tr(**self._inputs(latents, t, self.embeds), return_dict=False)[0]
        if self.cfg:
            neg = tr(**self._inputs(latents, t, self.neg_embeds), return_dict=False)[0]
            noise = neg + self.true_cfg * (noise - neg)
        return noise

    def cost_calls(self) -> list[tuple[tuple, dict[str, Any]]]:
        if self.img_ids is None:
            self.prepare_latents([torch.Generator("cpu").manual_seed(0) for _ in self.prompts])
        x = torch.zeros(1, self._seq_len(), self.pipe.transformer.config.in_channels)
        t = torch.zeros(())
        calls = [((), self._inputs(x, t, self.embeds))]
        if self.cfg:
            calls.append(((), self._inputs(x, t, self.neg_embeds)))
        return calls

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        from eval.fidelity import decode_latents

        return decode_latents(self.pipe, latents, int(self.height), int(self.width))
