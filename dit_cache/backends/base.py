"""Backend protocol and the per-call context every backend sees."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..adapters import Site


@dataclass
class StepContext:
    """Where the transformer is in the current generation; updated by the step tracker on every call."""

    generation: int = -1  # index of the generation since the hooks were installed
    step: int = 0  # denoising step index, from the timestep sequence
    branch: int = 0  # k-th transformer call at this timestep (cond / uncond when CFG makes separate calls)
    timestep: float | None = None
    num_steps: int | None = None  # steps of this generation when the pipeline's scheduler tells us


@runtime_checkable
class Backend(Protocol):
    """Decides per (step, block, component, branch) whether to compute, and supplies the value when not."""

    def begin_generation(self, ctx: StepContext) -> None:
        """Reset per-generation state (called on the first transformer call of a generation)."""

    def should_compute(self, site: Site, ctx: StepContext) -> bool:
        """True to run the component, False to take `reuse()` instead."""

    def store(self, site: Site, ctx: StepContext, output: Any) -> None:
        """Keep what later steps need from a computed output."""

    def reuse(self, site: Site, ctx: StepContext) -> Any:
        """The value to use instead of running the component."""

    def cache_bytes(self) -> int:
        """Bytes held by cached tensors right now."""

    def reset(self) -> None:
        """Drop all cached state."""


# -- block-level backends ------------------------------------------------------------------------
# A block-level backend (``level = "block"``) gets one hook per transformer block instead of one per
# component. It sees each block's *streams*: the block's stream inputs in the order the block returns
# them (``Adapter.block_outputs``: (hidden_states,) or (encoder_hidden_states, hidden_states)).
Streams = tuple  # tuple[Tensor | None, ...]
BlockPlan = tuple  # (streams the block returns instead of running, last block of the skipped range)


@runtime_checkable
class BlockBackend(Protocol):
    """Decides per block whether to run it or to skip a contiguous range of blocks with a given value.

    ``block_pre(b, ctx, streams_in, (module, args, kwargs))`` returns ``None`` to run block b, or ``(value, end)`` to return
    ``value`` from block b and pass blocks b+1..end through unchanged. ``block_post`` sees every
    computed block. Optional: ``bind(handle)`` at install, ``begin_call(ctx)`` before every transformer
    call, ``end_call(ctx, output) -> output`` after it.
    """

    level: str  # "block"

    def begin_generation(self, ctx: StepContext) -> None:
        """Reset per-generation state."""

    def block_pre(self, block: int, ctx: StepContext, streams: Streams, inputs: tuple) -> BlockPlan | None:
        """None to run the block, or (value streams, last skipped block)."""

    def block_post(self, block: int, ctx: StepContext, streams_in: Streams, streams_out: Streams) -> None:
        """Observe a computed block's input and output streams."""

    def cache_bytes(self) -> int:
        """Bytes held by cached tensors right now."""

    def reset(self) -> None:
        """Drop all cached state."""


def tensor_bytes(tree: Any) -> int:
    """Bytes of every tensor in a nested structure (dicts, lists, tuples; None ignored)."""
    from torch.utils._pytree import tree_leaves

    return sum(t.numel() * t.element_size() for t in tree_leaves(tree) if hasattr(t, "element_size"))


def streams_sub(a: Streams, b: Streams) -> Streams:
    """Per-stream a − b (None where either is None)."""
    return tuple(None if x is None or y is None else x - y for x, y in zip(a, b))


def streams_add(a: Streams, b: Streams) -> Streams:
    """Per-stream a + b (None where either is None)."""
    return tuple(None if x is None or y is None else x + y for x, y in zip(a, b))


def rel_l1(a: Streams, ref: Streams) -> float:
    """Σ|a − ref| / Σ|ref| over all non-None streams (one host sync)."""
    num = den = 0.0
    for x, y in zip(a, ref):
        if x is not None and y is not None:
            num = num + (x - y).abs().float().mean() * y.numel()
            den = den + y.abs().float().mean() * y.numel()
    return float(num / den) if float(den) > 0 else float("inf")


def check_family(backend: str, family: str, supported: tuple[str, ...]) -> None:
    """Raise a clear error when `backend` does not support the model `family`."""
    if family not in supported:
        raise ValueError(
            f"{backend} does not support the {family!r} family; supported families: {', '.join(supported)}"
        )


class StackResidualMixin:
    """Keeps R = out - in of the whole block stack per branch (state objects with `residual` and `in0`)."""

    def block_post(self, block: int, ctx: StepContext, streams_in: Streams, streams_out: Streams) -> None:
        """After the last block of a full step: R <- out - in."""
        if block == self.n_blocks - 1:
            st = self.state[ctx.branch]
            st.residual, st.in0 = streams_sub(streams_out, st.in0), None
