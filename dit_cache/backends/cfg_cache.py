"""CFG-branch caching: reconstruct the unconditional call from the conditional one and a cached difference.

After FasterCache's CFG-Cache ("FasterCache: Training-Free Video Diffusion Model Acceleration with High
Quality", arXiv 2410.19355): the gap between the two CFG branches' features changes slowly across steps.
With separate cond / uncond transformer calls per step (FLUX true CFG, Wan), S the whole-stack output::

    full step t:   run both calls;  Δ ← S_uncond(t) − S_cond(t)
    other steps:   run the cond call;  S_uncond(t) ≈ S_cond(t) + Δ     (every block of the uncond call skipped)

Full steps: the first ``warmup``, every ``interval``-th after them, and the last. The reconstruction is of
the block stack's output (the transformer's output layers still run on it); FasterCache weights low and
high frequencies separately, which this file does not. Batched CFG (one call per step: PixArt, SD3, DiT)
has no second call to skip: the backend raises at step 1, naming the fix, instead of doing nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..schedule import ScheduleSpace
from .base import BackendConfig, BlockBackend, StepContext, Streams, streams_add, streams_sub, tensor_bytes


@dataclass
class CFGCacheConfig(BackendConfig):
    """CFG-branch caching (FasterCache's CFG-Cache, https://arxiv.org/abs/2410.19355) for separate CFG calls."""

    interval: int = 2  # every interval-th step (after warm-up) runs the uncond call in full
    warmup: int = 2

    def __post_init__(self) -> None:
        self.check_values()
        if self.interval < 1 or self.warmup < 1:
            raise ValueError(f"CFGCacheConfig needs interval >= 1 and warmup >= 1 (got {self.interval}, {self.warmup})")

    def build_backend(self, space: ScheduleSpace, transformer: nn.Module) -> CFGCacheBackend:
        """A backend for `space` (any family whose pipeline makes separate cond / uncond calls)."""
        return CFGCacheBackend(self, space.shape[0])


@dataclass
class CFGCacheBackend(BlockBackend):
    """Block-level backend for `CFGCacheConfig` (branch 0 = the first call at a step, branch 1 the second)."""

    config: CFGCacheConfig
    n_blocks: int
    first_out: Streams | None = None  # stack output of this step's first call
    delta: Streams | None = None  # S_second − S_first of the last full step
    second_seen: bool = False

    def begin_generation(self, ctx: StepContext) -> None:
        """Forget the previous generation."""
        self.first_out, self.delta, self.second_seen = None, None, False

    def _full(self, ctx: StepContext) -> bool:
        c, k = self.config, ctx.step
        last = ctx.num_steps is not None and k >= ctx.num_steps - 1
        return k < c.warmup or last or (k - c.warmup) % c.interval == 0 or self.delta is None

    def begin_call(self, ctx: StepContext) -> None:
        """Refuse pipelines with one call per step (batched CFG): nothing could be skipped."""
        self.second_seen |= ctx.branch > 0
        if ctx.step >= 1 and ctx.branch == 0 and not self.second_seen:
            raise ValueError("CFG-branch caching needs separate cond / uncond transformer calls per step (FLUX with "
                             "true_cfg_scale > 1 and a negative prompt, Wan with guidance_scale > 1); this pipeline "
                             "made one call per step (batched CFG or no CFG): use another backend")

    def block_pre(self, block: int, ctx: StepContext, streams: Streams, inputs: object = None):
        """The second call of a non-full step skips every block: S_first + Δ."""
        if block == 0 and ctx.branch == 1 and self.first_out is not None and not self._full(ctx):
            return streams_add(self.first_out, self.delta), self.n_blocks - 1
        return None

    def block_post(self, block: int, ctx: StepContext, streams_in: Streams, streams_out: Streams) -> None:
        """Keep the first call's stack output; on full steps, the branches' difference."""
        if block != self.n_blocks - 1:
            return
        if ctx.branch == 0:
            self.first_out = streams_out
        elif ctx.branch == 1 and self.first_out is not None:
            self.delta = streams_sub(streams_out, self.first_out)

    def cache_bytes(self) -> int:
        """Bytes of the first call's output and the difference."""
        return tensor_bytes((self.first_out, self.delta))

    def reset(self) -> None:
        """Drop all state."""
        self.begin_generation(StepContext())
