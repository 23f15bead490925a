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
