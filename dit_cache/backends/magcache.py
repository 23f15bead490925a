"""MagCache: skip the whole stack while the accumulated error of the calibrated residual-magnitude ratios is small.

"MagCache: Fast Video Generation with Magnitude-Aware Cache" (2025), arXiv 2506.09045. With R_t = out_t − in_t
the whole-stack residual, its magnitude ratio γ_t = mean_token ‖R_t‖ / ‖R_{t−1}‖ is nearly the same for every
prompt, so it is calibrated once per model and step count (`calibrate_magcache`, ``dit-cache profile
--backend magcache``). While skipping since the last computed step::

    Γ ← Γ · γ_t,   E ← E + |1 − Γ|,   k ← k + 1
    E ≤ δ and k ≤ K:  output = input + R     (all blocks skipped; R the residual of the last computed step)
    else:             run all blocks, R ← out − in, Γ ← 1, E ← 0, k ← 0

The first ⌈retention_ratio · steps⌉ steps and the last step always run. Separate state per CFG branch.
diffusers defaults: δ = 0.06, K = 3, retention 0.2. ``threshold=0`` never skips.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..schedule import ScheduleSpace
from . import profiles
from .base import (
    BackendConfig,
    BlockBackend,
    StackResidualMixin,
    StepContext,
    Streams,
    streams_add,
    streams_sub,
    tensor_bytes,
)
from .limits import SkipCounter, SkipLimits


@dataclass
class MagCacheConfig(BackendConfig):
    """MagCache (https://arxiv.org/abs/2506.09045) with ratios from a profile (or given as `mag_ratios`)."""

    threshold: float = 0.06
    max_skip_steps: int = 3
    retention_ratio: float = 0.2
    profile: str | Path | dict | None = None
    mag_ratios: Sequence[float] | None = None  # one per step (γ_0 unused)
    limits: SkipLimits = field(default_factory=SkipLimits)

    def __post_init__(self) -> None:
        self.check_values()
        if self.threshold < 0 or self.max_skip_steps < 0 or not 0 <= self.retention_ratio <= 1:
            raise ValueError("MagCacheConfig needs threshold >= 0, max_skip_steps >= 0 and 0 <= retention_ratio <= 1 "
                             f"(got {self.threshold}, {self.max_skip_steps}, {self.retention_ratio})")
        if (self.profile is None) == (self.mag_ratios is None):
            raise ValueError("MagCacheConfig needs exactly one of profile (from `dit-cache profile --backend "
                             "magcache`) or mag_ratios")
        if not isinstance(self.limits, SkipLimits):
            raise ValueError(f"MagCacheConfig.limits must be a SkipLimits, got {self.limits!r}")

    def build_backend(self, space: ScheduleSpace, transformer: nn.Module) -> MagCacheBackend:
        """A backend for `transformer` (any family; a profile must be for this model)."""
        prof, ratios = None, self.mag_ratios
        if self.profile is not None:
            prof = profiles.load_profile(self.profile, "magcache")
            profiles.check_model(prof, transformer, "magcache")
            ratios = prof.get("mag_ratios")
        if not isinstance(ratios, (list, tuple)) or not ratios or not all(profiles.is_number(r) for r in ratios):
            raise profiles.ProfileError(f"MagCache's mag_ratios must be a list of numbers, got {ratios!r}: make a "
                                        "profile with `dit-cache profile --backend magcache`")
        return MagCacheBackend(self, space.shape[0], [float(r) for r in ratios], prof)


@dataclass
class _BranchState:
    residual: Streams | None = None  # whole-stack residual of the last computed step
    in0: Streams | None = None  # stack input during a computed step
    gamma: float = 1.0  # accumulated ratio since the last computed step
    err: float = 0.0  # accumulated |1 - gamma|
    skipped: int = 0  # skips since the last computed step
    count: SkipCounter = field(default_factory=SkipCounter)


@dataclass
class MagCacheBackend(StackResidualMixin):
    """Block-level backend for `MagCacheConfig`."""

    config: MagCacheConfig
    n_blocks: int
    ratios: list[float]
    profile: dict | None = None
    state: dict[int, _BranchState] = field(default_factory=dict)

    def begin_generation(self, ctx: StepContext) -> None:
        """Check the step count against the ratios; forget the previous generation."""
        n = ctx.num_steps
        if n is not None and n != len(self.ratios):
            raise profiles.ProfileError(
                f"MagCache's ratios cover {len(self.ratios)} steps but the pipeline runs {n}: call it with "
                f"num_inference_steps={len(self.ratios)} or profile again with --steps {n}")
        self.state.clear()

    def _gate(self, st: _BranchState, ctx: StepContext) -> bool:
        c, n = self.config, ctx.num_steps or len(self.ratios)
        if ctx.step >= len(self.ratios):  # a bare transformer (no step count) ran past the ratios
            raise profiles.ProfileError(f"MagCache's ratios cover {len(self.ratios)} steps but the generation reached "
                                        f"step {ctx.step + 1}: profile again with --steps {ctx.step + 1} or more")
        if ctx.step < math.ceil(c.retention_ratio * n) or ctx.step >= n - 1 or st.residual is None or c.threshold <= 0:
            return False
        gamma = st.gamma * self.ratios[ctx.step]
        err = st.err + abs(1.0 - gamma)
        if err > c.threshold or st.skipped >= c.max_skip_steps:
            return False
        st.gamma, st.err = gamma, err
        return True

    def block_pre(self, block: int, ctx: StepContext, streams: Streams, inputs: tuple):
        """Gate at block 0: skip the stack with input + R, or run it."""
        if block != 0:
            return None
        st = self.state.setdefault(ctx.branch, _BranchState())
        if st.count.decide(self.config.limits, ctx.step, self._gate(st, ctx)):
            st.skipped += 1
            return streams_add(streams, st.residual), self.n_blocks - 1
        st.gamma, st.err, st.skipped, st.in0 = 1.0, 0.0, 0, streams
        return None

    def cache_bytes(self) -> int:
        """Bytes of the stack residual per branch."""
        return sum(tensor_bytes((s.residual, s.in0)) for s in self.state.values())

    def reset(self) -> None:
        """Drop all state."""
        self.state.clear()


@dataclass
class _Recorder(BlockBackend):
    """Never skips; records per step the mean per-token ratio ‖R_t‖ / ‖R_{t−1}‖ of each branch."""

    n_blocks: int
    state: dict[int, _BranchState] = field(default_factory=dict)
    ratios: dict[int, list[float]] = field(default_factory=dict)  # step -> ratios over calls and branches

    def block_pre(self, block: int, ctx: StepContext, streams: Streams, inputs: tuple):
        if block == 0:
            self.state.setdefault(ctx.branch, _BranchState()).in0 = streams
        return None

    def block_post(self, block: int, ctx: StepContext, streams_in: Streams, streams_out: Streams) -> None:
        if block != self.n_blocks - 1:
            return
        st = self.state[ctx.branch]
        r = streams_sub(streams_out, st.in0)
        if st.residual is not None and ctx.step > 0:
            new, old = r[-1].float(), st.residual[-1].float()  # the image stream
            ratio = (new.norm(dim=-1) / old.norm(dim=-1).clamp_min(1e-12)).mean()
            self.ratios.setdefault(ctx.step, []).append(float(ratio))
        st.residual, st.in0 = r, None

    def begin_generation(self, ctx: StepContext) -> None:
        self.state.clear()


def calibrate_magcache(pipe: Any, calls: Sequence[dict], *, model: str = "") -> dict[str, Any]:
    """Mean magnitude ratio per step over uncached runs of `calls` (pipeline kwargs); returns the profile dict."""
    from ..runtime import accelerate, space_of

    space = space_of(pipe.transformer)
    rec = _Recorder(space.shape[0])
    handle = accelerate(pipe, rec)
    try:
        profiles.run_calls(pipe, calls)
    finally:
        handle.remove()
    steps = {c.get("num_inference_steps") for c in calls}
    n = max(rec.ratios) + 1 if rec.ratios else 0
    if n < 2:
        raise profiles.ProfileError("MagCache calibration recorded fewer than 2 steps: use more steps")
    ratios = [1.0] + [float(np.mean(rec.ratios.get(i, [1.0]))) for i in range(1, n)]
    return profiles.new_profile(backend="magcache", family=space.family, model=model,
                                fingerprint=profiles.model_fingerprint(pipe.transformer),
                                steps=steps.pop() if len(steps) == 1 else None, prompts=len(calls), mag_ratios=ratios)
