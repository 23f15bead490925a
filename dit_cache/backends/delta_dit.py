"""Δ-DiT: cache the deviation of a contiguous block range; rear blocks early, front blocks late.

"Δ-DiT: A Training-Free Acceleration Method Tailored for Diffusion Transformers", arXiv 2406.01125.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..schedule import ScheduleSpace
from .base import BackendConfig, BlockBackend, StepContext, Streams, streams_add, streams_sub, tensor_bytes


@dataclass
class DeltaDiTConfig(BackendConfig):
    """Δ-DiT (https://arxiv.org/abs/2406.01125): reuse Δ = h_out(B_j) − h_in(B_i) of a block range.

    On a full step the range B_i..B_j runs and Δ is stored; on a cached step the range is skipped::

        h_out(B_j) ≈ h_in(B_i)(current step) + Δ

    Stage rule with boundary step b: steps < b cache the *rear* ``num_blocks`` blocks (the front blocks
    shape the outline and keep running), steps ≥ b the *front* ``num_blocks`` blocks. Full steps: step 0,
    step b (the range changes) and every ``interval``-th step of each stage. No dynamic gate.

    The paper's per-model N, range size and b are not published in full ([unverified]): defaults are
    interval 2, half the stack, b = 12 (of 20 steps). ``interval=1`` never skips.
    """

    interval: int = 2
    num_blocks: int | None = None  # None = half the blocks (at least 1)
    boundary_step: int = 12

    def __post_init__(self) -> None:
        self.check_values()
        if self.interval < 1 or self.boundary_step < 0 or (self.num_blocks is not None and self.num_blocks < 1):
            raise ValueError(
                f"DeltaDiTConfig needs interval >= 1, boundary_step >= 0, num_blocks >= 1 or None "
                f"(got {self.interval}, {self.boundary_step}, {self.num_blocks})"
            )

    def build_backend(self, space: ScheduleSpace, transformer: nn.Module) -> DeltaDiTBackend:
        """A backend for `space` (all families)."""
        n_blocks = space.shape[0]
        n = self.num_blocks if self.num_blocks is not None else max(1, n_blocks // 2)
        if n > n_blocks:
            raise ValueError(f"num_blocks={n} but the model has only {n_blocks} blocks")
        return DeltaDiTBackend(self, n_blocks, n)


@dataclass
class _BranchState:
    h_in: Streams | None = None  # input of the range's first block on the current full step
    delta: Streams | None = None  # h_out(last) − h_in(first) from the last full step
    range: tuple[int, int] | None = None  # the range `delta` belongs to


@dataclass
class DeltaDiTBackend(BlockBackend):
    """Block-level backend for `DeltaDiTConfig`."""

    config: DeltaDiTConfig
    n_blocks: int
    n_cached: int
    state: dict[int, _BranchState] = field(default_factory=dict)

    def block_range(self, step: int) -> tuple[int, int]:
        """(first, last) block of the cached range at `step`."""
        if step < self.config.boundary_step:
            return self.n_blocks - self.n_cached, self.n_blocks - 1
        return 0, self.n_cached - 1

    def is_full(self, step: int) -> bool:
        """Whether the range runs at `step`."""
        b = self.config.boundary_step
        start = 0 if step < b else b
        return (step - start) % self.config.interval == 0

    def begin_generation(self, ctx: StepContext) -> None:
        """Forget the previous generation."""
        self.state.clear()

    def block_pre(self, block: int, ctx: StepContext, streams: Streams, inputs: object = None):
        """At the range's first block: skip it with h_in + Δ on cached steps, else remember h_in."""
        lo, hi = self.block_range(ctx.step)
        if block != lo:
            return None
        st = self.state.setdefault(ctx.branch, _BranchState())
        if not self.is_full(ctx.step) and st.range == (lo, hi):
            return streams_add(streams, st.delta), hi
        st.h_in = streams
        return None

    def block_post(self, block: int, ctx: StepContext, streams_in: Streams, streams_out: Streams) -> None:
        """At the range's last block on a full step: store Δ."""
        lo, hi = self.block_range(ctx.step)
        st = self.state.get(ctx.branch)
        if block == hi and st is not None and st.h_in is not None:
            st.delta, st.range, st.h_in = streams_sub(streams_out, st.h_in), (lo, hi), None

    def cache_bytes(self) -> int:
        """Bytes of the stored deviations (and a pending range input, if any)."""
        return sum(tensor_bytes(s.delta) + tensor_bytes(s.h_in) for s in self.state.values())

    def reset(self) -> None:
        """Drop all state."""
        self.state.clear()
