"""First-Block Cache (ParaAttention, diffusers `FirstBlockCacheConfig`): gate on the first block's residual."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..schedule import ScheduleSpace
from .base import (
    BackendConfig,
    BlockBackend,
    StepContext,
    Streams,
    rel_l1,
    streams_add,
    streams_sub,
    tensor_bytes,
)
from .limits import SkipCounter, SkipLimits


@dataclass
class FirstBlockCacheConfig(BackendConfig):
    """First-Block Cache (https://github.com/chengzeyi/ParaAttention, diffusers `FirstBlockCacheConfig`).

    Block 0 always runs; with r = out₀ − in₀ and r_ref the first-block residual of the last full step::

        rel = mean|r − r_ref| / mean|r_ref|
        rel < τ:  out_{L−1} = out₀ + R_tail          (blocks 1..L−1 skipped)
        else:     run blocks 1..L−1;  R_tail ← out_{L−1} − out₀;  r_ref ← r

    Step 0 always runs. Separate state per CFG branch (separate cond/uncond calls); with batched CFG
    the gate is taken on the whole batch. diffusers default τ = 0.05 (FLUX 1.55× at τ = 0.08).
    ``threshold=0`` never skips. ``limits`` (`SkipLimits`): warm-up, max consecutive / total skips, forced
    refresh steps, per CFG branch.
    """

    threshold: float = 0.05
    limits: SkipLimits = field(default_factory=SkipLimits)

    def __post_init__(self) -> None:
        self.check_values()
        if not isinstance(self.limits, SkipLimits):
            raise ValueError(f"{type(self).__name__}.limits must be a SkipLimits, got {self.limits!r}")
        if self.threshold < 0:
            raise ValueError(f"FirstBlockCacheConfig.threshold must be >= 0, got {self.threshold}")

    def build_backend(self, space: ScheduleSpace, transformer: nn.Module) -> FirstBlockCacheBackend:
        """A backend for `space` (all families; a one-block model never skips)."""
        return FirstBlockCacheBackend(self, space.shape[0])


@dataclass
class _BranchState:
    r_ref: Streams | None = None  # first-block residual of the last full step
    tail: Streams | None = None  # out_{L−1} − out₀ of the last full step
    out0: Streams | None = None  # block-0 output of the current full step (until the last block)
    count: SkipCounter = field(default_factory=SkipCounter)
    skip: bool = False  # decision for the current call


@dataclass
class FirstBlockCacheBackend(BlockBackend):
    """Block-level backend for `FirstBlockCacheConfig`."""

    config: FirstBlockCacheConfig
    n_blocks: int
    state: dict[int, _BranchState] = field(default_factory=dict)

    def begin_generation(self, ctx: StepContext) -> None:
        """Forget the previous generation."""
        self.state.clear()

    def block_pre(self, block: int, ctx: StepContext, streams: Streams, inputs: object = None):
        """Block 1 returns out₀ + R_tail when block 0 decided to skip."""
        if block == 1:
            st = self.state[ctx.branch]
            if st.skip:
                return streams_add(streams, st.tail), self.n_blocks - 1
        return None

    def block_post(self, block: int, ctx: StepContext, streams_in: Streams, streams_out: Streams) -> None:
        """Gate after block 0; store the tail residual after the last block."""
        if block == 0:
            st = self.state.setdefault(ctx.branch, _BranchState())
            r = streams_sub(streams_out, streams_in)
            gate = (
                self.n_blocks > 1 and ctx.step > 0 and st.r_ref is not None and st.tail is not None
                and self.config.threshold > 0 and rel_l1(r, st.r_ref) < self.config.threshold
            )
            st.skip = st.count.decide(self.config.limits, ctx.step, gate)
            if not st.skip:
                st.r_ref, st.out0 = r, streams_out
        if block == self.n_blocks - 1 and self.n_blocks > 1:
            st = self.state[ctx.branch]
            st.tail, st.out0 = streams_sub(streams_out, st.out0), None

    def cache_bytes(self) -> int:
        """Bytes of r_ref and R_tail per branch."""
        return sum(tensor_bytes((s.r_ref, s.tail, s.out0)) for s in self.state.values())

    def reset(self) -> None:
        """Drop all state."""
        self.state.clear()
