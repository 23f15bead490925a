"""Static step x block x component schedules (FORA, ECAD): compute where the schedule says, reuse elsewhere.

FORA (arXiv 2407.01425) and ECAD (arXiv 2506.15682). A reused component returns the raw output cached
at its last computed step::

    y_{i,l,c} = f_{l,c}(x_{i,l,c})      if S[i, l, c]
    y_{i,l,c} = y_{j,l,c}               otherwise, j = max{j < i : S[j, l, c]}

while the block recomputes its adaLN modulation, gates and residual adds at step i. A forecast cell
('f' in the schedule file) instead extrapolates from the cell's last two computed steps j' < j
(first-order TaylorSeer, `TaylorFactors`)::

    y_{i,l,c} = y_j + (i − j) · (y_j − y_{j'}) / (j − j')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch.utils._pytree import tree_leaves

from ..adapters import Site
from ..schedule import Schedule, ScheduleError
from .base import StepContext
from .taylorseer import TaylorFactors


@dataclass
class StaticCacheState:
    """Cached component outputs, one dict per CFG branch: {(block, component): output}."""

    caches: dict[int, dict[tuple[int, int], Any]] = field(default_factory=dict)
    factors: dict[int, dict[tuple[int, int], TaylorFactors]] = field(default_factory=dict)  # forecast cells only

    def reset(self) -> None:
        """Forget every cached output."""
        self.caches.clear()
        self.factors.clear()


class StaticScheduleBackend:
    """Follows a `Schedule`; optionally resamples it to the pipeline's step count."""

    def __init__(self, schedule: Schedule, *, resample: bool = False) -> None:
        self.schedule = schedule
        self.resample = resample
        self.state = StaticCacheState()
        self._plans: dict[int, tuple[list, list, list | None, list | None]] = {}
        self._compute, self._store, self._fc, self._track = self._plan(schedule.steps)

    @property
    def num_steps(self) -> int:
        """Steps of the active plan."""
        return len(self._compute)

    def _plan(self, steps: int) -> tuple[list, list, list | None, list | None]:
        """Nested-list lookups (fast in the hot path): compute[s][b][c], store[s][b][c], and for schedules
        with forecast cells forecast[s][b][c] and track[b][c] (cells whose Taylor factors are kept)."""
        if steps not in self._plans:
            sched = self.schedule.resample(steps)
            arr = sched.compute
            store = arr.copy()
            store[:-1] &= ~arr[1:]  # keep an output only if the next step reuses it
            store[-1] = False
            fc = sched.forecast
            track = None if fc is None else fc.any(0)
            if track is not None:
                store[:, track] = False  # tracked cells reuse their newest factor Δ⁰ (the last output)
            plan = (arr.tolist(), store.tolist(), None if fc is None else fc.tolist(),
                    None if track is None else track.tolist())
            self._plans[steps] = plan
        return self._plans[steps]

    def begin_generation(self, ctx: StepContext) -> None:
        """Reset caches; check or resample the step count."""
        self.state.reset()
        n = ctx.num_steps
        if n is not None and n != self.schedule.steps:
            if not self.resample:
                raise ScheduleError(
                    f"schedule {self.schedule.name!r} has {self.schedule.steps} steps but the pipeline runs {n}: "
                    f"call the pipeline with num_inference_steps={self.schedule.steps}, make a schedule for {n} "
                    "steps, or pass resample=True to accelerate() (nearest step in normalized time)"
                )
            self._compute, self._store, self._fc, self._track = self._plan(n)
        else:
            self._compute, self._store, self._fc, self._track = self._plan(self.schedule.steps)

    def should_compute(self, site: Site, ctx: StepContext) -> bool:
        """The schedule's cell for this step."""
        return self._compute[ctx.step][site.block][site.component]

    def store(self, site: Site, ctx: StepContext, output: Any) -> None:
        """Keep the output when the next step reuses it."""
        if self._store[ctx.step][site.block][site.component]:
            self.state.caches.setdefault(ctx.branch, {})[site.block, site.component] = output
        if self._track is not None and self._track[site.block][site.component]:
            cell = self.state.factors.setdefault(ctx.branch, {}).setdefault((site.block, site.component), TaylorFactors())
            cell.update(output, ctx.step, 1)

    def reuse(self, site: Site, ctx: StepContext) -> Any:
        """The output cached at the last computed step of this branch (or its forecast on 'f' cells)."""
        if self._track is not None and self._track[site.block][site.component]:
            cell = self.state.factors[ctx.branch][site.block, site.component]
            return cell.forecast(ctx.step) if self._fc[ctx.step][site.block][site.component] else cell.factors[0]
        try:
            return self.state.caches[ctx.branch][site.block, site.component]
        except KeyError:
            raise RuntimeError(
                f"no cached output for block {site.block_id} {site.name} (branch {ctx.branch}, step {ctx.step}); "
                "the generation must start at step 0 of the schedule"
            ) from None

    def cache_bytes(self) -> int:
        """Bytes held by cached outputs."""
        return sum(
            t.numel() * t.element_size()
            for cache in self.state.caches.values()
            for out in cache.values()
            for t in tree_leaves(out)
            if hasattr(t, "element_size")
        ) + sum(f.nbytes() for cells in self.state.factors.values() for f in cells.values())

    def reset(self) -> None:
        """Drop cached outputs."""
        self.state.reset()

    def snapshot(self) -> dict[str, Any]:
        """The cache contents now (references: cached outputs are never modified in place)."""
        factors = {b: {k: (list(f.factors), f.step) for k, f in c.items()} for b, c in self.state.factors.items()}
        return {"caches": {b: dict(c) for b, c in self.state.caches.items()}, "steps": self.num_steps, "factors": factors}

    def restore(self, snap: dict[str, Any]) -> None:
        """Continue from a `snapshot()` of a generation with the same plan up to that point."""
        self._compute, self._store, self._fc, self._track = self._plan(snap["steps"])
        self.state.caches = {b: dict(c) for b, c in snap["caches"].items()}
        self.state.factors = {}
        for b, cells in snap.get("factors", {}).items():
            for k, (factors, step) in cells.items():
                f = self.state.factors.setdefault(b, {})[k] = TaylorFactors()
                f.factors, f.step = list(factors), step
