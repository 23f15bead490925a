"""Wan2.1 (`WanPipeline`): video latents (B, C, frames, h, w), flow matching, separate cond / uncond
transformer calls per step (cond first), UMT5 text."""

from __future__ import annotations

from typing import Any

import torch

from eval.fidelity import frames_as_image

from .base import DenoiseLoop, LoopError


class WanLoop(DenoiseLoop):
    """`WanPipeline.__call__` (one transformer: Wan2.1), one step at a time."""

    family = "wan"
    pipeline_names = ("WanPipeline",)
    supported = ("guidance_scale", "negative_prompt", "height", "width", "num_frames", "max_sequence_length")

    def encode(self) -> None:
        pipe = self.pipe
        if pipe.config.boundary_ratio is not None or getattr(pipe, "transformer_2", None) is not None:
            raise LoopError("the search's Wan loop runs one transformer (Wan2.1); this pipeline switches to "
                            "transformer_2 (boundary_ratio is set: Wan2.2), which it cannot reproduce")
        self.height, self.width, self.num_frames = self.arg("height"), self.arg("width"), self.arg("num_frames")
        t_scale, s_scale = pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial
        ph, pw = pipe.transformer.config.patch_size[1:]
        if (self.num_frames - 1) % t_scale or self.height % (s_scale * ph) or self.width % (s_scale * pw):
            raise LoopError(f"Wan generates num_frames = {t_scale}k+1 frames at multiples of ({s_scale * ph}, "
                            f"{s_scale * pw}) pixels; got {self.num_frames} frames at {self.height}x{self.width} "
                            "(the pipeline would round them): pass valid values")
        self.cfg = self.guidance_scale > 1.0
        pe, npe = pipe.encode_prompt(prompt=self.prompts, negative_prompt=self.arg("negative_prompt"),
                                     do_classifier_free_guidance=self.cfg, num_videos_per_prompt=1,
                                     max_sequence_length=self.arg("max_sequence_length"), device=self.device)
        dtype = pipe.transformer.dtype
        self.prompt_embeds = pe.to(dtype)
        self.neg_embeds = npe.to(dtype) if npe is not None else None

    def set_timesteps(self, sched: Any) -> None:
        sched.set_timesteps(self.steps, device=self.device)
        sched.set_begin_index(0)

    def prepare_latents(self, generators: list[torch.Generator]) -> torch.Tensor:
        pipe = self.pipe
        return pipe.prepare_latents(len(self.prompts), pipe.transformer.config.in_channels, self.height, self.width,
                                    self.num_frames, torch.float32, self.device, generators)  # (B, C, F, h, w)

    def _timestep(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.pipe.config.expand_timesteps:
            mask = torch.ones(latents.shape, dtype=torch.float32, device=latents.device)
            return (mask[0][0][:, ::2, ::2] * t).flatten().unsqueeze(0).expand(latents.shape[0], -1)
        return t.expand(latents.shape[0])

    def _inputs(self, latents: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> dict[str, Any]:
        b = latents.shape[0]
        return {"hidden_states": latents.to(self.pipe.transformer.dtype), "timestep": self._timestep(latents, t),
                "encoder_hidden_states": embeds[:b], "attention_kwargs": None}

    def predict(self, latents: torch.Tensor, t: torch.Tensor, sched: Any) -> torch.Tensor:
        tr = self.pipe.transformer
        noise = tr(**self._inputs(latents, t, self.prompt_embeds), return_dict=False)[0]
        if self.cfg:
            un = tr(**self._inputs(latents, t, self.neg_embeds), return_dict=False)[0]
            noise = un + self.guidance_scale * (noise - un)
        return noise

    def cost_calls(self) -> list[tuple[tuple, dict[str, Any]]]:
        pipe = self.pipe
        f = (self.num_frames - 1) // pipe.vae_scale_factor_temporal + 1
        s = pipe.vae_scale_factor_spatial
        x = torch.zeros(1, pipe.transformer.config.in_channels, f, self.height // s, self.width // s)
        t = torch.zeros(())
        calls = [((), self._inputs(x, t, self.prompt_embeds))]
        if self.cfg:
            calls.append(((), self._inputs(x, t, self.neg_embeds)))
        return calls

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        pipe = self.pipe
        z = pipe.vae.config.z_dim
        mean = torch.tensor(pipe.vae.config.latents_mean).view(1, z, 1, 1, 1).to(latents.device, latents.dtype)
        inv_std = 1.0 / torch.tensor(pipe.vae.config.latents_std).view(1, z, 1, 1, 1).to(latents.device, latents.dtype)
        with torch.inference_mode():
            video = pipe.vae.decode(latents.to(pipe.vae.dtype) / inv_std + mean, return_dict=False)[0]
        return frames_as_image(pipe.video_processor.postprocess_video(video, output_type="pt"))  # (B, 3, F*H, W)
