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

Over a static schedule (``schedule=``, spec ``STATIC-SPEC+cfg-cache[:N[:WARMUP]]``) every call that runs
follows the schedule, per branch, and warm-up and interval count the schedule's *active* steps (those it
computes any cell at): the uncond call runs in full at the first ``warmup`` active steps, every
``interval``-th after them and the last, is reconstructed at its other active steps, and runs as planned
(every cell reused) at inactive ones. A reused cell returns its branch's output from the branch's last
run, so the savings multiply::

    dc.accelerate(pipe, dc.CFGCacheConfig(interval=3, schedule="learned-3.81x.json"))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..adapters import Site
from ..schedule import Schedule, ScheduleSpace
from .base import BackendConfig, BlockBackend, StepContext, Streams, streams_add, streams_sub, tensor_bytes
from .static import Plan, StaticScheduleBackend, schedule_backend


@dataclass
class CFGCacheConfig(BackendConfig):
    """CFG-branch caching (FasterCache's CFG-Cache, https://arxiv.org/abs/2410.19355) for separate CFG calls."""

    interval: int = 2  # every interval-th step (after warm-up) runs the uncond call in full
    warmup: int = 2
    schedule: Schedule | str | Path | None = None  # a static schedule every call that runs follows (None: compute all)
    resample: bool = False  # adapt `schedule` to the pipeline's step count (nearest step)

    def __post_init__(self) -> None:
        self.check_values()
        if self.interval < 1 or self.warmup < 1:
            raise ValueError(f"CFGCacheConfig needs interval >= 1 and warmup >= 1 (got {self.interval}, {self.warmup})")

    def build_backend(self, space: ScheduleSpace, transformer: nn.Module) -> CFGCacheBackend | CFGScheduleBackend:
        """A backend for `space` (any family whose pipeline makes separate cond / uncond calls)."""
        gate = CFGCacheBackend(self, space.shape[0])
        if self.schedule is None:
            return gate
        backend = schedule_backend(self.schedule, space, resample=self.resample, cls=CFGScheduleBackend)
        backend.gate = gate
        return backend


@dataclass
class CFGCacheBackend(BlockBackend):
    """Block-level backend for `CFGCacheConfig` (branch 0 = the first call at a step, branch 1 the second)."""

    config: CFGCacheConfig
    n_blocks: int
    active: list[bool] | None = None  # over a schedule: the steps it computes anything at (None: every step)
    first_out: Streams | None = None  # stack output of this step's first call
    delta: Streams | None = None  # S_second − S_first of the last full step
    second_seen: bool = False

    def begin_generation(self, ctx: StepContext) -> None:
        """Forget the previous generation."""
        self.first_out, self.delta, self.second_seen = None, None, False

    def skips_call(self, ctx: StepContext) -> bool:
        """Whether this call (the second of a non-full step) is reconstructed instead of run."""
        return ctx.branch == 1 and self.first_out is not None and not self._full(ctx)

    def _full(self, ctx: StepContext) -> bool:
        c, k = self.config, ctx.step
        if self.active is not None:  # count the schedule's active steps; an inactive one runs (cheaply) as planned
            if not self.active[k]:
                return True
            k, last = sum(self.active[:k]), not any(self.active[k + 1:])
        else:
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
        if block == 0 and self.skips_call(ctx):
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


class CFGScheduleBackend(StaticScheduleBackend):
    """A static schedule on every call that runs; `CFGCacheBackend` (``gate``) reconstructs the skipped uncond calls."""

    gates_blocks = True
    gate: CFGCacheBackend

    def __init__(self, schedule: Schedule, *, resample: bool = False) -> None:
        self._skip_call = False
        super().__init__(schedule, resample=resample)

    def _plan(self, steps: int) -> Plan:
        """The schedule's plan, keeping every computed output (untracked cells): the uncond branch's last run
        may be any earlier step, so a cell's output is held until its branch next computes it."""
        fresh = steps not in self._plans
        compute, store, fc, track = super()._plan(steps)
        if fresh:
            store = [[[c and not (track is not None and track[b][i]) for i, c in enumerate(row)]
                      for b, row in enumerate(rows)] for rows in compute]
            self._plans[steps] = (compute, store, fc, track)
        return self._plans[steps]

    def begin_generation(self, ctx: StepContext) -> None:
        """Reset the schedule's caches and the gate; the gate counts the active plan's active steps."""
        super().begin_generation(ctx)
        self.gate.begin_generation(ctx)
        runs = np.array(self._compute, bool) | (np.array(self._fc, bool) if self._fc else False)
        self.gate.active = (runs & self.schedule.space.applicable[None]).any((1, 2)).tolist()

    def begin_call(self, ctx: StepContext) -> None:
        """The gate's checks; whether this call is reconstructed (then no component is planned to run)."""
        self.gate.begin_call(ctx)
        self._skip_call = self.gate.skips_call(ctx)

    def should_compute(self, site: Site, ctx: StepContext) -> bool:
        return not self._skip_call and super().should_compute(site, ctx)

    def keeps(self, site: Site, ctx: StepContext) -> bool:
        return not self._skip_call and super().keeps(site, ctx)

    def reuse(self, site: Site, ctx: StepContext) -> Any:
        return None if self._skip_call else super().reuse(site, ctx)

    def block_pre(self, block: int, ctx: StepContext, streams: Streams, inputs: object = None):
        return self.gate.block_pre(block, ctx, streams, inputs)

    def block_post(self, block: int, ctx: StepContext, streams_in: Streams, streams_out: Streams) -> None:
        self.gate.block_post(block, ctx, streams_in, streams_out)

    def cache_bytes(self) -> int:
        """Bytes of the schedule's caches and the gate's."""
        return super().cache_bytes() + self.gate.cache_bytes()

    def reset(self) -> None:
        """Drop all state."""
        super().reset()
        self.gate.reset()

    def snapshot(self) -> Any:
        raise NotImplementedError("CFGScheduleBackend cannot snapshot (the search runs schedules without the gate)")
