"""Backend protocol and the per-call context every backend sees."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ..adapters import Site

if TYPE_CHECKING:
    from ..schedule import ScheduleSpace

Streams = tuple  # tuple[Tensor | None, ...]: a block's stream tensors
BlockPlan = tuple  # (streams the block returns instead of running, last block of the skipped range)


@dataclass
class StepContext:
    """Where the transformer is in the current generation; updated by the step tracker on every call."""

    generation: int = -1  # index of the generation since the hooks were installed
    step: int = 0  # denoising step index, from the timestep sequence
    branch: int = 0  # k-th transformer call at this timestep (cond / uncond when CFG makes separate calls)
    timestep: float | None = None
    num_steps: int | None = None  # steps of this generation when the pipeline's scheduler tells us
    steps_note: str = ""  # why num_steps differs from num_inference_steps (e.g. a second-order sampler)


class Backend:
    """Base class of every caching backend: the complete list of calls the runtime makes, with no-op defaults.

    Component-level backends (``level = "component"``) get one hook per cacheable component and answer
    `should_compute` / `store` / `reuse`. Block-level backends (``level = "block"``: Δ-DiT, TeaCache,
    First-Block Cache, CG-Taylor, ERTACache) get one hook per transformer block and answer `block_pre` /
    `block_post` on the block's *streams*: its stream inputs in the order the block returns them
    (``Adapter.block_outputs``: (hidden_states,) or (encoder_hidden_states, hidden_states)).
    A component-level backend with ``gates_blocks`` gets both: component hooks inside the blocks and block hooks
    whose `block_pre` may skip a range of blocks (CFG-branch caching over a static schedule); the components of a
    skipped block count as not run. Whatever a backend needs from the model it gets as constructor arguments (from its config's
    `build_backend`). The runtime records each call's decision (skipped or not) for block-level backends.
    """

    level: ClassVar[str] = "component"
    reuses_blocks: ClassVar[bool] = False  # a component-level backend that also skips whole blocks (`block_plan`)
    gates_blocks: ClassVar[bool] = False  # a component-level backend that also answers `block_pre` / `block_post`

    @property
    def num_steps(self) -> int | None:
        """Denoising steps the backend plans for (None: any)."""
        return None

    def begin_generation(self, ctx: StepContext) -> None:
        """Reset per-generation state (called on the first transformer call of a generation)."""

    def begin_call(self, ctx: StepContext) -> None:
        """Before every transformer call."""

    def end_call(self, ctx: StepContext, output: Any) -> Any:
        """After every transformer call: the output to return (default: unchanged)."""
        return output

    def overhead_macs(self) -> dict[str, int]:
        """MACs the backend itself ran during the call that just ended, per MAC convention (e.g. TeaCache's
        recomputed modulation of block 0), counted as executed by `handle.stats`; {} for none (the default)."""
        return {}

    # -- component level --
    def should_compute(self, site: Site, ctx: StepContext) -> bool:
        """True to run the component, False to take `reuse()` instead."""
        return True

    def compile_patterns(self, per: str = "block") -> int:
        """Distinct decision patterns a compiled block (``per="block"``) or compiled transformer (``per="step"``)
        may see (`CacheHandle.compile_blocks`, `CacheHandle.compile`); 1 when the backend has no static plan."""
        return 1

    def keeps(self, site: Site, ctx: StepContext) -> bool:
        """Whether `store` will use this call's output of a computed `site` (False: it is not held for it)."""
        return True

    def store(self, site: Site, ctx: StepContext, output: Any) -> None:
        """Keep what later steps need from a computed output."""

    def reuse(self, site: Site, ctx: StepContext) -> Any:
        """The value to use instead of running the component."""
        raise NotImplementedError(f"{type(self).__name__} never skips a component")

    # -- component level, whole blocks (``reuses_blocks``) --
    def block_plan(self, block: int, ctx: StepContext) -> tuple[bool, bool]:
        """(skip block `block`: return its input streams + `block_residual`, keep its residual out − in)."""
        return False, False

    def block_residual(self, block: int, ctx: StepContext) -> Streams:
        """What a skipped block adds to its input streams."""
        raise NotImplementedError(f"{type(self).__name__} never skips a block")

    def store_block(self, block: int, ctx: StepContext, residual: Streams) -> None:
        """Keep a kept block's residual (output − input streams)."""

    # -- block level --
    def block_pre(self, block: int, ctx: StepContext, streams: Streams, inputs: tuple) -> BlockPlan | None:
        """None to run block `block`, or (value streams, last skipped block): return ``value`` from this block
        and pass blocks block+1..end through unchanged. ``inputs`` = (module, args, kwargs) of the block."""
        return None

    def block_post(self, block: int, ctx: StepContext, streams_in: Streams, streams_out: Streams) -> None:
        """Observe a computed block's input and output streams."""

    # -- state --
    def cache_bytes(self) -> int:
        """Bytes held by cached tensors right now."""
        return 0

    def reset(self) -> None:
        """Drop all cached state."""

    def snapshot(self) -> Any:
        """The cache state now, to continue the generation later with `restore` (prefix sharing)."""
        raise NotImplementedError(f"{type(self).__name__} cannot snapshot its state")

    def restore(self, snap: Any) -> None:
        """Continue from a `snapshot()`."""
        raise NotImplementedError(f"{type(self).__name__} cannot restore a snapshot")


class BlockBackend(Backend):
    """A backend that runs or skips whole blocks (see `Backend`)."""

    level: ClassVar[str] = "block"


class BackendConfig:
    """Base class of backend configs (the dataclasses users pass to `dit_cache.accelerate`)."""

    def check_values(self) -> None:
        """Raise a ValueError naming the field when a number field holds NaN, ±inf, a bool or a fraction for an
        integer (so that no value is silently reinterpreted: NaN compares False with every threshold)."""
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v, d = getattr(self, f.name), f.default
            where = f"{type(self).__name__}.{f.name}"
            if isinstance(d, bool) or d is dataclasses.MISSING or v is None or isinstance(d, (str, type(None))):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{where} must be a number, got {v!r}")
            if isinstance(d, int) and not isinstance(v, int):
                raise ValueError(f"{where} must be a whole number, got {v!r}")
            if not math.isfinite(v):
                raise ValueError(f"{where} must be a finite number, got {v!r}")

    def build_backend(self, space: ScheduleSpace, transformer: nn.Module) -> Backend:
        """The backend for `transformer`, whose schedule space is `space`."""
        raise NotImplementedError


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
    """Σ|a − ref| / Σ|ref| over all non-None streams (+inf when Σ|ref| = 0); one host sync, the final float()."""
    num = den = None
    for x, y in zip(a, ref):
        if x is not None and y is not None:
            n, d = (x - y).abs().float().mean() * y.numel(), y.abs().float().mean() * y.numel()
            num, den = (n, d) if num is None else (num + n, den + d)
    if num is None:
        return float("inf")
    return float(torch.where(den > 0, num / den, torch.full_like(den, float("inf"))))


def check_family(backend: str, family: str, supported: tuple[str, ...]) -> None:
    """Raise a clear error when `backend` does not support the model `family`."""
    if family not in supported:
        raise ValueError(
            f"{backend} does not support the {family!r} family; supported families: {', '.join(supported)}"
        )


class StackResidualMixin(BlockBackend):
    """Keeps R = out - in of the whole block stack per branch (state objects with `residual` and `in0`)."""

    def block_post(self, block: int, ctx: StepContext, streams_in: Streams, streams_out: Streams) -> None:
        """After the last block of a full step: R <- out - in."""
        if block == self.n_blocks - 1:
            st = self.state[ctx.branch]
            st.residual, st.in0 = streams_sub(streams_out, st.in0), None
