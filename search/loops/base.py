"""The loop protocol: encode prompts once, noise from one seed per prompt, run step k, keep and resume state.

A family's loop reproduces ``pipe(prompts, generator=[one per seed], **call_defaults, output_type="latent")``
bit for bit (tested per family) but one step at a time, so a search can stop after step k, keep the state
(latents, a deep copy of the scheduler, the RNG states, the cache snapshot) and resume other candidates from
it. A family file fills in five hooks: `encode`, `prepare_latents`, `predict` (the transformer calls of one
step, CFG combined), `cost_calls` (those calls' inputs for one prompt, for exact MACs) and `decode`.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import torch


@dataclass
class LoopState:
    """Everything a generation needs to continue after `step` (-1 = before step 0)."""

    step: int
    latents: torch.Tensor  # the family's latent layout, batch first
    scheduler: Any  # deep copy (multistep solvers keep a history of model outputs)
    generator_states: list[torch.Tensor]
    cache: dict[str, Any] | None  # CacheHandle.snapshot(), None before step 0


class LoopError(ValueError):
    """A pipeline or call setting the search's loop cannot reproduce."""


def call_default(pipe: Any, defaults: dict[str, Any], name: str) -> Any:
    """`defaults[name]`, else the default of `name` in the pipeline's `__call__` signature (None if absent)."""
    if name in defaults:
        return defaults[name]
    p = inspect.signature(type(pipe).__call__).parameters.get(name)
    return None if p is None or p.default is inspect.Parameter.empty else p.default


class DenoiseLoop:
    """Denoise a fixed batch of prompts (one seed each) step by step; subclasses are one family each."""

    family: ClassVar[str] = ""
    pipeline_names: ClassVar[tuple[str, ...]] = ()  # pipeline class names this loop reproduces
    step_generator: ClassVar[bool] = False  # the pipeline passes its generators to scheduler.step
    supported: ClassVar[tuple[str, ...]] = ()  # call arguments besides prompt / steps / generator / output type

    def __init__(self, pipe: Any, prompts: list[str], seeds: list[int], steps: int,
                 defaults: dict[str, Any] | None = None) -> None:
        if len(prompts) != len(seeds) or not prompts:
            raise LoopError(f"need one seed per prompt, got {len(prompts)} prompts and {len(seeds)} seeds")
        self.defaults = dict(defaults or {})
        unknown = sorted(set(self.defaults) - set(self.supported) - {"num_inference_steps", "output_type"})
        if unknown:
            raise LoopError(f"the search's {self.family} loop cannot reproduce the call argument(s) "
                            f"{', '.join(unknown)}; it supports {', '.join(self.supported)}")
        self.pipe, self.steps = pipe, steps
        self.prompts, self.seeds = list(prompts), list(seeds)
        self.device = pipe._execution_device
        self.guidance_scale = float(self.arg("guidance_scale"))
        with torch.no_grad():
            self.encode()

    def arg(self, name: str) -> Any:
        """A call argument: the model's call default, else the pipeline's own default."""
        return call_default(self.pipe, self.defaults, name)

    # -- family hooks -----------------------------------------------------------------------
    def encode(self) -> None:
        """Encode the prompts (and CFG negatives) once; set height / width."""
        raise NotImplementedError

    def set_timesteps(self, sched: Any) -> None:
        """Set `steps` timesteps on a fresh scheduler copy, as the pipeline does."""
        from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import retrieve_timesteps

        retrieve_timesteps(sched, self.steps, self.device)

    def prepare_latents(self, generators: list[torch.Generator]) -> torch.Tensor:
        """Initial noise from one generator per prompt."""
        raise NotImplementedError

    def sample(self, latents: torch.Tensor, t: torch.Tensor, sched: Any) -> torch.Tensor:
        """The sample the scheduler steps at `t` (the latent state itself, except DiT's)."""
        return latents

    def predict(self, latents: torch.Tensor, t: torch.Tensor, sched: Any) -> torch.Tensor:
        """The model output the scheduler steps with at timestep `t` (all transformer calls, CFG combined)."""
        raise NotImplementedError

    def cost_calls(self) -> list[tuple[tuple, dict[str, Any]]]:
        """(args, kwargs) of each transformer call of one step for the first prompt (MAC counting)."""
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Final latents -> float images (N, 3, H, W) in [0, 1] (video: frames stacked along H)."""
        raise NotImplementedError

    def final(self, latents: torch.Tensor) -> torch.Tensor:
        """The generation's final latents from the loop's latent state (DiT keeps its CFG-doubled batch)."""
        return latents

    def pipe_kwargs(self) -> dict[str, Any]:
        """Family call arguments of `call_kwargs` beyond the prompts, steps, generators and output type."""
        kw = {k: self.arg(k) for k in self.supported}
        if "height" in kw:
            kw["height"], kw["width"] = self.height, self.width
        return kw

    # -- the loop ---------------------------------------------------------------------------
    def initial_state(self) -> LoopState:
        """Noise from the seeds and a fresh scheduler set to `steps` timesteps."""
        gens = [torch.Generator("cpu").manual_seed(s) for s in self.seeds]
        sched = copy.deepcopy(self.pipe.scheduler)
        self.set_timesteps(sched)
        if len(sched.timesteps) != self.steps:
            raise LoopError(f"scheduler {type(sched).__name__} gives {len(sched.timesteps)} timesteps for "
                            f"{self.steps} steps: the search runs one schedule row per timestep")
        latents = self.prepare_latents(gens)
        return LoopState(-1, latents, sched, [g.get_state() for g in gens], None)

    @staticmethod
    def _generators(state: LoopState) -> list[torch.Generator]:
        gens = []
        for st in state.generator_states:
            g = torch.Generator("cpu")
            g.set_state(st)
            gens.append(g)
        return gens

    def step(self, state: LoopState, handle: Any | None = None) -> LoopState:
        """Run step `state.step + 1`; returns a new state (the input state is not modified) holding `handle`'s
        cache snapshot when a handle is given (to resume from it)."""
        i = state.step + 1
        sched = copy.deepcopy(state.scheduler)
        t = sched.timesteps[i]
        x = self.sample(state.latents, t, sched)
        with torch.no_grad():
            noise = self.predict(x, t, sched)
        gens = self._generators(state)
        kw = {"generator": gens} if self.step_generator and "generator" in inspect.signature(sched.step).parameters else {}
        out = sched.step(noise, t, x, return_dict=False, **kw)
        latents = self.step_output(out)
        cache = handle.snapshot() if handle is not None else None
        return LoopState(i, latents, sched, [g.get_state() for g in gens], cache)

    def step_output(self, out: tuple) -> torch.Tensor:
        """The next latents from `scheduler.step(..., return_dict=False)`."""
        return out[0]

    def run(self, handle: Any | None = None) -> torch.Tensor:
        """All steps from noise; the final latents (`handle`, if given, is reset first: a new generation)."""
        state = self.initial_state()
        if handle is not None:
            handle.reset()
        for _ in range(self.steps):
            state = self.step(state)  # (no cache snapshots: nothing resumes from them)
        return self.final(state.latents)

    def call_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `pipe(...)` that generate the same batch (used to check faithfulness)."""
        from dit_cache.resolve import prompt_kwargs

        return {**self.pipe_kwargs(), **prompt_kwargs(self.pipe, self.prompts), "num_inference_steps": self.steps,
                "generator": [torch.Generator("cpu").manual_seed(s) for s in self.seeds], "output_type": "latent"}

    def pipe_output(self, **overrides: Any) -> torch.Tensor:
        """What `pipe(**call_kwargs())` returns, as one tensor (compare with `as_pipe_output(run())`)."""
        out = self.pipe(**{**self.call_kwargs(), **overrides})
        return out.frames if hasattr(out, "frames") else out.images

    def as_pipe_output(self, latents: torch.Tensor) -> torch.Tensor:
        """Final latents in the form `pipe_output` returns them (the latents themselves, except DiT's images)."""
        return latents
