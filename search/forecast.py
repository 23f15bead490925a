"""Mixed schedules: every cell computes, reuses, or *forecasts* its component output (``--forecast``).

A mixed genome is an int8 array [steps, blocks, components] with 0 = reuse, 1 = compute,
2 = forecast. Reuse returns the output of the cell's last computed step (FORA / ECAD); forecast
returns TaylorSeer's extrapolation (arXiv 2503.06923) from finite-difference factors refreshed on
the cell's computed steps::

    F̂_i = Σ_{m ≤ O} Δ^m · k^m / m!,   k = i − (last computed step of the cell)

Mixing reuse and forecast cells per (step, block, component) is what the search can learn when
``--forecast`` is on. Front files stay dit-cache schedules (compute = cells equal to 1) with the
forecast cells in ``metadata["forecast_cells"]``; run them with `MixedScheduleConfig.load(path)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dit_cache.adapters import Site
from dit_cache.backends import StepContext
from dit_cache.backends.taylorseer import TaylorFactors
from dit_cache.schedule import Schedule, ScheduleError, ScheduleSpace

REUSE, COMPUTE, FORECAST = 0, 1, 2


def _copy(tf: TaylorFactors) -> TaylorFactors:
    """Shallow copy: `TaylorFactors.update` replaces its list, never mutates tensors, so sharing is safe."""
    out = TaylorFactors()
    out.factors, out.step = tf.factors, tf.step
    return out


class MixedBackend:
    """Compute / reuse / forecast per cell; keeps factors of every computed cell (prefix-sharing safe)."""

    def __init__(self, steps: int, order: int = 1) -> None:
        if order < 0:
            raise ValueError(f"forecast order must be >= 0, got {order}")
        self.num_steps, self.order = steps, order
        self.compute: list = []
        self.forecast: list = []
        self.caches: dict[int, dict[tuple[int, int], TaylorFactors]] = {}

    def set_schedule(self, plan: Any) -> None:
        """Follow a mixed genome (int8) or a plain Schedule (no forecast cells)."""
        g = plan.compute.astype(np.int8) if isinstance(plan, Schedule) else np.asarray(plan)
        if g.shape[0] != self.num_steps:
            raise ValueError(f"plan has {g.shape[0]} steps, the search runs {self.num_steps}")
        self.compute = (g == COMPUTE).tolist()
        self.forecast = (g == FORECAST).tolist()

    def begin_generation(self, ctx: StepContext) -> None:
        """Drop factors; check the pipeline's step count."""
        if ctx.num_steps is not None and ctx.num_steps != self.num_steps:
            raise ScheduleError(f"the mixed schedule has {self.num_steps} steps but the pipeline runs "
                                f"{ctx.num_steps}: call it with num_inference_steps={self.num_steps}")
        self.caches = {}

    def should_compute(self, site: Site, ctx: StepContext) -> bool:
        """The plan's cell."""
        return self.compute[ctx.step][site.block][site.component]

    def store(self, site: Site, ctx: StepContext, output: Any) -> None:
        """Refresh the cell's Taylor factors (Δ⁰ = this output)."""
        cells = self.caches.setdefault(ctx.branch, {})
        tf = cells.get((site.block, site.component))
        tf = _copy(tf) if tf is not None else TaylorFactors()
        tf.update(output, ctx.step, self.order)
        cells[site.block, site.component] = tf

    def reuse(self, site: Site, ctx: StepContext) -> Any:
        """Last computed output (reuse cell) or its Taylor forecast (forecast cell)."""
        try:
            tf = self.caches[ctx.branch][site.block, site.component]
        except KeyError:
            raise RuntimeError(f"no cached output for block {site.block_id} {site.name} at step {ctx.step}") from None
        return tf.forecast(ctx.step) if self.forecast[ctx.step][site.block][site.component] else tf.factors[0]

    def cache_bytes(self) -> int:
        """Bytes held by all factors."""
        return sum(tf.nbytes() for cells in self.caches.values() for tf in cells.values())

    def reset(self) -> None:
        """Drop all factors."""
        self.caches = {}

    def snapshot(self) -> dict[int, dict[tuple[int, int], TaylorFactors]]:
        """Copies of the factor holders (tensors shared)."""
        return {b: {k: _copy(v) for k, v in c.items()} for b, c in self.caches.items()}

    def restore(self, snap: dict[int, dict[tuple[int, int], TaylorFactors]]) -> None:
        """Continue from a snapshot."""
        self.caches = {b: {k: _copy(v) for k, v in c.items()} for b, c in snap.items()}


def forecast_cells_json(genome: np.ndarray) -> list[list[str]]:
    """Forecast mask as one string per block per step ('1' = forecast), like schedule cells."""
    f = genome == FORECAST
    return [["".join("1" if x else "0" for x in blk) for blk in step] for step in f]


def genome_of(schedule: Schedule) -> np.ndarray:
    """The mixed genome of a schedule file (forecast cells from its metadata, if any)."""
    g = schedule.compute.astype(np.int8)
    cells = schedule.metadata.get("forecast_cells")
    if cells:
        f = np.array([[[ch == "1" for ch in blk] for blk in step] for step in cells], dtype=bool)
        if f.shape != g.shape or (f & schedule.compute).any():
            raise ScheduleError("metadata['forecast_cells'] does not match the schedule (shape, or forecasts a computed cell)")
        g[f] = FORECAST
    return g


@dataclass
class MixedScheduleConfig:
    """Backend config for `dit_cache.accelerate`: a schedule whose reuse cells may be Taylor forecasts."""

    schedule: Schedule
    genome: np.ndarray = field(default=None)  # int8 [steps, blocks, components]; None = from the schedule
    order: int = 1

    def __post_init__(self) -> None:
        if self.genome is None:
            self.genome = genome_of(self.schedule)
        if self.genome.shape != self.schedule.compute.shape:
            raise ScheduleError(f"genome shape {self.genome.shape} != schedule shape {self.schedule.compute.shape}")

    @classmethod
    def load(cls, path: str | Path) -> MixedScheduleConfig:
        """From a front file of a `--forecast` search (order from its metadata)."""
        s = Schedule.load(path)
        return cls(s, order=int(s.metadata.get("forecast_order", 1)))

    def build_backend(self, space: ScheduleSpace) -> MixedBackend:
        """The backend for a model with schedule space `space`."""
        why = self.schedule.space.describe_mismatch(space)
        if why:
            raise ScheduleError(f"schedule {self.schedule.name!r} does not fit this model: {why}")
        backend = MixedBackend(self.schedule.steps, self.order)
        backend.set_schedule(self.genome)
        return backend
