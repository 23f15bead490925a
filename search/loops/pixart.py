"""PixArt-α / Σ (`PixArtAlphaPipeline`, `PixArtSigmaPipeline`): batched CFG, T5 text with its mask."""

from __future__ import annotations

from typing import Any

import torch

from .base import DenoiseLoop, LoopError


def pipeline_size(pipe: Any) -> tuple[int, int]:
    """(height, width) in pixels at the model's native size (as `pipe()` by default)."""
    size = pipe.transformer.config.sample_size * pipe.vae_scale_factor
    return size, size


class PixArtLoop(DenoiseLoop):
    """`PixArtAlphaPipeline.__call__` / `PixArtSigmaPipeline.__call__`, one step at a time."""

    family = "pixart"
    pipeline_names = ("PixArtAlphaPipeline", "PixArtSigmaPipeline")
    step_generator = True
    supported = ("guidance_scale", "height", "width", "max_sequence_length", "use_resolution_binning",
                 "clean_caption")

    def encode(self) -> None:
        pipe = self.pipe
        if self.defaults.get("use_resolution_binning"):
            raise LoopError("the search generates at an exact size: set use_resolution_binning=False")
        self.sigma = "Sigma" in type(pipe).__name__
        self.max_sequence_length = self.arg("max_sequence_length")
        self.cfg = self.guidance_scale > 1.0
        pe, pm, npe, npm = pipe.encode_prompt(
            self.prompts, self.cfg, negative_prompt="", num_images_per_prompt=1, device=self.device,
            clean_caption=False, max_sequence_length=self.max_sequence_length,
        )
        if self.cfg:
            pe, pm = torch.cat([npe, pe], 0), torch.cat([npm, pm], 0)  # (2B, T, D), (2B, T)
        self.prompt_embeds, self.prompt_mask = pe, pm
        native = pipeline_size(pipe)
        self.height, self.width = self.arg("height") or native[0], self.arg("width") or native[1]
        self.added_cond_kwargs: dict[str, Any] = {"resolution": None, "aspect_ratio": None}
        if pipe.transformer.config.sample_size == 128 and not self.sigma:  # PixArt-α 1024 px micro-conditions
            n = len(self.prompts) * (2 if self.cfg else 1)
            res = torch.tensor([self.height, self.width]).repeat(n, 1).to(pe.dtype)
            ar = torch.tensor([float(self.height / self.width)]).repeat(n, 1).to(pe.dtype)
            self.added_cond_kwargs = {"resolution": res, "aspect_ratio": ar}

    def pipe_kwargs(self) -> dict[str, Any]:
        return {**super().pipe_kwargs(), "use_resolution_binning": False, "clean_caption": False}

    def set_timesteps(self, sched: Any) -> None:
        super().set_timesteps(sched)
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(0)

    def prepare_latents(self, generators: list[torch.Generator]) -> torch.Tensor:
        return self.pipe.prepare_latents(len(self.prompts), self.pipe.transformer.config.in_channels, self.height,
                                         self.width, self.prompt_embeds.dtype, self.device, generators, None)

    def _inputs(self, latents: torch.Tensor, t: torch.Tensor, n: int | None = None) -> dict[str, Any]:
        """Transformer kwargs at timestep `t` (the first `n` rows of the CFG batch when given)."""
        def rows(x: Any) -> Any:
            return x if n is None or x is None else x[:n]
        ct = t[None].to(latents.device) if torch.is_tensor(t) and t.ndim == 0 else t
        if not torch.is_tensor(ct):
            ct = torch.tensor([ct], device=latents.device)
        return {"encoder_hidden_states": rows(self.prompt_embeds), "encoder_attention_mask": rows(self.prompt_mask),
                "timestep": ct.expand(latents.shape[0]),
                "added_cond_kwargs": {k: rows(v) for k, v in self.added_cond_kwargs.items()}}

    def predict(self, latents: torch.Tensor, t: torch.Tensor, sched: Any) -> torch.Tensor:
        lmi = torch.cat([latents] * 2) if self.cfg else latents  # (2B, C, h, w)
        lmi = sched.scale_model_input(lmi, t)
        noise = self.pipe.transformer(lmi, **self._inputs(lmi, t), return_dict=False)[0]
        if self.cfg:
            un, tx = noise.chunk(2)
            noise = un + self.guidance_scale * (tx - un)
        cfg = self.pipe.transformer.config
        if cfg.out_channels // 2 == cfg.in_channels:
            noise = noise.chunk(2, dim=1)[0]  # learned sigma: keep the epsilon half
        return noise

    def step_output(self, out: tuple) -> torch.Tensor:
        return out[1] if self.steps == 1 else out[0]  # one-step generation returns the denoised sample (DMD)

    def cost_calls(self) -> list[tuple[tuple, dict[str, Any]]]:
        n = 2 if self.cfg else 1
        vs = self.pipe.vae_scale_factor
        x = torch.zeros(n, self.pipe.transformer.config.in_channels, self.height // vs, self.width // vs)
        return [((x,), self._inputs(x, torch.zeros(()), n))]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        from eval.fidelity import decode_latents

        return decode_latents(self.pipe, latents)
