"""DiT (`DiTPipeline`): class labels instead of prompts, batched CFG over a doubled latent batch (the
scheduler steps both halves), learned sigma dropped; the pipeline always decodes."""

from __future__ import annotations

from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from .base import DenoiseLoop

NULL_CLASS = 1000  # DiTPipeline's unconditional label


class DiTLoop(DenoiseLoop):
    """`DiTPipeline.__call__`, one step at a time; a prompt is a class id, a label name or any text
    (`dit_cache.resolve.prompt_kwargs`)."""

    family = "dit"
    pipeline_names = ("DiTPipeline",)
    supported = ("guidance_scale",)

    def encode(self) -> None:
        from dit_cache.resolve import prompt_kwargs

        self.class_labels = prompt_kwargs(self.pipe, self.prompts)["class_labels"]
        self.cfg = self.guidance_scale > 1
        vae_scale = 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)
        self.height = self.width = self.pipe.transformer.config.sample_size * vae_scale
        labels = torch.tensor(self.class_labels, device=self.device).reshape(-1)
        null = torch.tensor([NULL_CLASS] * len(self.prompts), device=self.device)
        self.labels = torch.cat([labels, null], 0) if self.cfg else labels

    def set_timesteps(self, sched: Any) -> None:
        sched.set_timesteps(self.steps)

    def prepare_latents(self, generators: list[torch.Generator]) -> torch.Tensor:
        c = self.pipe.transformer.config
        latents = randn_tensor((len(self.prompts), c.in_channels, c.sample_size, c.sample_size), generator=generators,
                               device=self.device, dtype=self.pipe.transformer.dtype)
        return torch.cat([latents] * 2) if self.cfg else latents  # (2B, C, h, w): the pipeline's state

    @staticmethod
    def _timesteps(t: Any, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(t):
            t = torch.tensor([t], dtype=torch.float64 if isinstance(t, float) else torch.int64, device=x.device)
        elif t.ndim == 0:
            t = t[None].to(x.device)
        return t.expand(x.shape[0])

    def sample(self, latents: torch.Tensor, t: torch.Tensor, sched: Any) -> torch.Tensor:
        if self.cfg:  # the pipeline re-ties both halves to the conditional one, then scales
            half = latents[: len(latents) // 2]
            latents = torch.cat([half, half], dim=0)
        return sched.scale_model_input(latents, t)

    def predict(self, latents: torch.Tensor, t: torch.Tensor, sched: Any) -> torch.Tensor:
        noise = self.pipe.transformer(latents, timestep=self._timesteps(t, latents), class_labels=self.labels).sample
        ch = self.pipe.transformer.config.in_channels
        if self.cfg:
            eps, rest = noise[:, :ch], noise[:, ch:]
            cond, uncond = torch.split(eps, len(eps) // 2, dim=0)
            half_eps = uncond + self.guidance_scale * (cond - uncond)
            noise = torch.cat([torch.cat([half_eps, half_eps], dim=0), rest], dim=1)
        if self.pipe.transformer.config.out_channels // 2 == ch:
            noise = torch.split(noise, ch, dim=1)[0]
        return noise

    def final(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.chunk(2, dim=0)[0] if self.cfg else latents

    def cost_calls(self) -> list[tuple[tuple, dict[str, Any]]]:
        c = self.pipe.transformer.config
        n = 2 if self.cfg else 1
        x = torch.zeros(n, c.in_channels, c.sample_size, c.sample_size)
        labels = self.labels[[0, len(self.prompts)]] if self.cfg else self.labels[:1]
        return [((x,), {"timestep": torch.zeros(n, dtype=torch.int64), "class_labels": labels})]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            samples = self.pipe.vae.decode(1 / self.pipe.vae.config.scaling_factor * latents).sample
        return (samples / 2 + 0.5).clamp(0, 1)

    def call_kwargs(self) -> dict[str, Any]:
        return {**super().call_kwargs(), "output_type": "pt"}  # DiTPipeline has no latent output

    def as_pipe_output(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode(latents)
