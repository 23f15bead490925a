"""Confidence-gated Taylor forecasting (CG-Taylor): forecast the stack output when block 0 is predictable.

arXiv 2508.02240 ("Forecast then calibrate ..." / confidence-gated Taylor forecasting).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..schedule import ScheduleSpace
from .base import BackendConfig, BlockBackend, StepContext, Streams, rel_l1
from .limits import SkipCounter, SkipLimits
from .taylorseer import TaylorFactors


@dataclass
class CGTaylorConfig(BackendConfig):
    """CG-Taylor (https://arxiv.org/abs/2508.02240): two small Taylor factor sets and a first-block gate.

    Factors of the *first block's* output Y₁ (order O₁) and of the *last block's* output Y_L (order O_L,
    one set per CFG branch). Every step block 0 runs; with Ŷ₁ its Taylor forecast::

        e = mean|Ŷ₁ − Y₁| / mean|Y₁|
        e < τ:  Y_L ≈ Σ_m Δ_L^m k^m / m!     (blocks 1..L−1 skipped)
        else:   run blocks 1..L−1, refresh both factor sets

    The first ``warmup`` steps and the last step always run. CFG: the gate is taken on the conditional
    branch (the first call at a timestep) and its decision reused for the others, which then skip block 0
    too; with batched CFG it is taken on the whole batch. Defaults: orders 1/1, τ = 0.05 (their repos use
    0.03–0.13 on FLUX, 0.008 on DiT), warm-up 3. ``threshold=0`` never skips. ``limits`` (`SkipLimits`):
    max consecutive / total skips and forced refresh steps on top (its warm-up adds to ``warmup``).
    """

    threshold: float = 0.05
    order_first: int = 1
    order_last: int = 1
    warmup: int = 3
    limits: SkipLimits = field(default_factory=SkipLimits)

    def __post_init__(self) -> None:
        self.check_values()
        if not isinstance(self.limits, SkipLimits):
            raise ValueError(f"{type(self).__name__}.limits must be a SkipLimits, got {self.limits!r}")
        if self.threshold < 0 or self.order_first < 0 or self.order_last < 0 or self.warmup < 1:
            raise ValueError(
                "CGTaylorConfig needs threshold >= 0, orders >= 0, warmup >= 1 "
                f"(got {self.threshold}, {self.order_first}, {self.order_last}, {self.warmup})"
            )

    def build_backend(self, space: ScheduleSpace, transformer: nn.Module) -> CGTaylorBackend:
        """A backend for `space` (all families; needs at least 2 blocks)."""
        if space.shape[0] < 2:
            raise ValueError("CG-Taylor needs a model with at least 2 blocks (block 0 is the gate)")
        return CGTaylorBackend(self, space.shape[0])


@dataclass
class CGTaylorBackend(BlockBackend):
    """Block-level backend for `CGTaylorConfig`."""

    config: CGTaylorConfig
    n_blocks: int
    first: TaylorFactors = field(default_factory=TaylorFactors)  # gate branch only
    last: dict[int, TaylorFactors] = field(default_factory=dict)  # per branch
    decisions: dict[int, bool] = field(default_factory=dict)  # step -> skipped (taken on branch 0)
    errors: dict[int, float] = field(default_factory=dict)  # step -> gate error e
    count: SkipCounter = field(default_factory=SkipCounter)  # the gate branch's skips

    def begin_generation(self, ctx: StepContext) -> None:
        """Forget the previous generation."""
        self.first, self.last, self.decisions, self.errors, self.count = TaylorFactors(), {}, {}, {}, SkipCounter()

    def _forecast(self, ctx: StepContext, block: int) -> tuple[Streams, int]:
        return self.last[ctx.branch].forecast(ctx.step), self.n_blocks - 1

    def block_pre(self, block: int, ctx: StepContext, streams: Streams, inputs: object = None):
        """Branches after the gate branch reuse its decision (skipping block 0 too); block 1 applies it."""
        skip = self.decisions.get(ctx.step, False) and ctx.branch in self.last
        if block == 0 and ctx.branch > 0:
            return self._forecast(ctx, block) if skip else None
        if block == 1 and ctx.branch == 0 and skip:
            return self._forecast(ctx, block)
        return None

    def block_post(self, block: int, ctx: StepContext, streams_in: Streams, streams_out: Streams) -> None:
        """Gate after block 0 (branch 0); refresh factors on full steps."""
        c = self.config
        if block == 0 and ctx.branch == 0:
            last_step = ctx.num_steps is not None and ctx.step >= ctx.num_steps - 1
            gate = False
            if ctx.step >= c.warmup and not last_step and c.threshold > 0 and self.first.factors and 0 in self.last:
                e = rel_l1(self.first.forecast(ctx.step), streams_out)
                self.errors[ctx.step] = e
                gate = e < c.threshold
            skip = self.decisions[ctx.step] = self.count.decide(c.limits, ctx.step, gate)
            if not skip:
                self.first.update(streams_out, ctx.step, c.order_first)
        if block == self.n_blocks - 1:
            self.last.setdefault(ctx.branch, TaylorFactors()).update(streams_out, ctx.step, c.order_last)

    def cache_bytes(self) -> int:
        """Bytes of the first-block and last-block factors."""
        return self.first.nbytes() + sum(f.nbytes() for f in self.last.values())

    def reset(self) -> None:
        """Drop all state."""
        self.begin_generation(StepContext())
