"""TaylorSeer: forecast skipped component outputs from finite-difference Taylor factors.

"From Reusing to Forecasting: Accelerating Diffusion Models with TaylorSeers", arXiv 2503.06923.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.utils._pytree import tree_map

from ..adapters import Site
from ..schedule import ScheduleSpace
from .base import Backend, BackendConfig, StepContext, tensor_bytes


def _sub_div(a: Any, b: Any, d: float) -> Any:
    """(a − b) / d over matching trees (None leaves stay None)."""
    return tree_map(lambda x, y: None if x is None or y is None else (x - y) / d, a, b)


class TaylorFactors:
    """Finite-difference Taylor factors Δ⁰..Δ^O of one output tree, refreshed on full steps.

    On a full step at step s with new output F and d = s − s_last::

        Δ⁰ ← F,   Δ^{m+1} ← (Δ^m_new − Δ^m_old) / d     (m < O, as far as old factors exist)

    Forecast k = s − s_last steps ahead: F̂ = Σ_m Δ^m · k^m / m!.
    """

    __slots__ = ("factors", "step")

    def __init__(self) -> None:
        self.factors: list[Any] = []
        self.step = -1

    def update(self, value: Any, step: int, order: int) -> None:
        """Add the output computed at `step`."""
        if not self.factors:
            self.factors, self.step = [value], step
            return
        d = float(step - self.step)
        new = [value]
        for m in range(min(order, len(self.factors))):
            new.append(_sub_div(new[m], self.factors[m], d))
        self.factors, self.step = new, step

    def forecast(self, step: int) -> Any:
        """F̂ at `step` (= Δ⁰ when only one factor exists)."""
        k = float(step - self.step)
        out = self.factors[0]
        for m in range(1, len(self.factors)):
            c = k**m / math.factorial(m)
            out = tree_map(lambda x, y, c=c: None if x is None or y is None else x + y * c, out, self.factors[m])
        return out

    def nbytes(self) -> int:
        """Bytes held by the factors."""
        return tensor_bytes(self.factors)


@dataclass
class TaylorSeerConfig(BackendConfig):
    """TaylorSeer (https://arxiv.org/abs/2503.06923): per-component Taylor forecasting between full steps.

    Full steps: the first ``warmup`` steps, then every ``interval``-th step::

        full(i) = i < W  or  (i − W) mod N == 0

    On full steps every component runs and refreshes its factors (see `TaylorFactors`); on the other
    steps each component's raw output is forecast as F̂ = Σ_{m≤O} Δ^m k^m / m!, k = steps since the
    last full step. Separate factors per CFG branch. Memory: (O+1) output tensors per component.

    Defaults follow diffusers' ``TaylorSeerCacheConfig`` (cache_interval=5, max_order=1,
    disable_cache_before_step=3); the official DiT setting is N=4, O=4, W=2. ``interval=1`` never forecasts.
    """

    interval: int = 5
    order: int = 1
    warmup: int = 3

    def __post_init__(self) -> None:
        self.check_values()
        if self.interval < 1 or self.order < 0 or self.warmup < 1:
            raise ValueError(
                f"TaylorSeerConfig needs interval >= 1, order >= 0, warmup >= 1 (got {self.interval}, "
                f"{self.order}, {self.warmup}); warmup >= 1 because step 0 has nothing to forecast from"
            )

    def build_backend(self, space: ScheduleSpace, transformer: nn.Module) -> TaylorSeerBackend:
        """A backend for a model with schedule space `space` (all families)."""
        return TaylorSeerBackend(self)


@dataclass
class TaylorSeerBackend(Backend):
    """Component-level backend: compute on full steps, forecast elsewhere."""

    config: TaylorSeerConfig
    factors: dict[int, dict[tuple[int, int], TaylorFactors]] = field(default_factory=dict)  # branch -> cell

    def is_full(self, step: int) -> bool:
        """Whether every component runs at `step`."""
        w, n = self.config.warmup, self.config.interval
        return step < w or (step - w) % n == 0

    def begin_generation(self, ctx: StepContext) -> None:
        """Drop the previous generation's factors."""
        self.factors.clear()

    def should_compute(self, site: Site, ctx: StepContext) -> bool:
        """Full step, or no factors yet for this cell."""
        if self.is_full(ctx.step):
            return True
        return (site.block, site.component) not in self.factors.get(ctx.branch, {})

    def store(self, site: Site, ctx: StepContext, output: Any) -> None:
        """Refresh this cell's Taylor factors."""
        cell = self.factors.setdefault(ctx.branch, {}).setdefault((site.block, site.component), TaylorFactors())
        cell.update(output, ctx.step, self.config.order)

    def reuse(self, site: Site, ctx: StepContext) -> Any:
        """Taylor forecast of this cell's output."""
        return self.factors[ctx.branch][site.block, site.component].forecast(ctx.step)

    def cache_bytes(self) -> int:
        """Bytes held by all factors."""
        return sum(f.nbytes() for cells in self.factors.values() for f in cells.values())

    def reset(self) -> None:
        """Drop all factors."""
        self.factors.clear()
