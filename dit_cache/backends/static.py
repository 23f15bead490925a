"""Static step x block x component schedules (FORA, ECAD, learned): compute, reuse or forecast per cell.

FORA (arXiv 2407.01425) and ECAD (arXiv 2506.15682). A reused component returns the raw output cached
at its last computed step::

    y_{i,l,c} = f_{l,c}(x_{i,l,c})      if S[i, l, c] = compute
    y_{i,l,c} = y_{j,l,c}               if S[i, l, c] = reuse,  j = max{j < i : S[j, l, c] = compute}

while the block recomputes its adaLN modulation, gates and residual adds at step i. A forecast cell
(TaylorSeer, arXiv 2503.06923) extrapolates from finite-difference factors Δ⁰..Δ^O refreshed on the
cell's computed steps (`TaylorFactors`, O = the schedule's ``forecast_order``)::

    y_{i,l,c} = Σ_{m ≤ O} Δ^m · k^m / m!,   k = i − j

``keep_all=True`` (exact prefix sharing in the search) keeps every computed output — with
``forecast_order`` set, every cell's Taylor factors — so the state after step k depends only on the
schedule's rows 0..k, and `set_schedule` can switch to another plan with the same prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..adapters import Site
from ..ecad import load_schedule_file
from ..schedule import Schedule, ScheduleError, ScheduleSpace
from .base import Backend, StepContext, tensor_bytes
from .taylorseer import TaylorFactors

Plan = tuple  # (compute[s][b][c], store[s][b][c], forecast[s][b][c] | None, track[b][c] | None)


@dataclass
class StaticCacheState:
    """Per CFG branch: plain cached outputs {(block, component): output} and Taylor factors of tracked cells."""

    caches: dict[int, dict[tuple[int, int], Any]] = field(default_factory=dict)
    factors: dict[int, dict[tuple[int, int], TaylorFactors]] = field(default_factory=dict)

    def reset(self) -> None:
        """Forget every cached output."""
        self.caches.clear()
        self.factors.clear()


def schedule_backend(schedule: Schedule | str | Path, space: ScheduleSpace, *, resample: bool = False,
                     repair: bool = False, cls: type[StaticScheduleBackend] | None = None) -> StaticScheduleBackend:
    """A static backend (`cls`, default `StaticScheduleBackend`) following `schedule` (or a dit-cache / ECAD
    schedule file), after checking that it fits the model's schedule `space`."""
    if isinstance(schedule, (str, Path)):
        schedule = load_schedule_file(schedule, repair=repair)
    if not isinstance(schedule, Schedule):
        raise TypeError(f"expected a Schedule or a schedule file path, not {type(schedule).__name__}")
    why = schedule.space.describe_mismatch(space)
    if why:
        raise ScheduleError(f"schedule {schedule.name!r} does not fit this model: {why}")
    return (cls or StaticScheduleBackend)(schedule, resample=resample)


class StaticScheduleBackend(Backend):
    """Follows a `Schedule`; optionally resamples it to the pipeline's step count."""

    def __init__(self, schedule: Schedule, *, resample: bool = False, keep_all: bool = False,
                 forecast_order: int | None = None) -> None:
        if forecast_order is not None and not keep_all:
            raise ValueError("forecast_order is for keep_all backends; a schedule carries its own order")
        self.resample, self.keep_all, self.track_order = resample, keep_all, forecast_order
        self.state = StaticCacheState()
        self.set_schedule(schedule)

    def set_schedule(self, schedule: Schedule) -> None:
        """Follow `schedule` from now on (a restored state must come from a plan with the same prefix)."""
        if self.keep_all and schedule.forecast is not None and schedule.forecast_order != self.track_order:
            raise ScheduleError(
                f"schedule {schedule.name!r} forecasts with order {schedule.forecast_order} but this backend keeps "
                f"factors of order {self.track_order}: build it with forecast_order={schedule.forecast_order}"
            )
        self.schedule = schedule
        self.order = schedule.forecast_order if self.track_order is None else self.track_order  # of tracked cells
        self._plans: dict[int, Plan] = {}
        self._use(self._plan(schedule.steps))

    @property
    def num_steps(self) -> int:
        """Steps of the active plan."""
        return len(self._compute)


    def _use(self, plan: Plan) -> None:
        self._compute, self._store, self._fc, self._track = plan

    def _plan(self, steps: int) -> Plan:
        """Nested-list lookups (fast in the hot path): compute[s][b][c], store[s][b][c] (keep the output as the
        plain cache), and for forecasting plans forecast[s][b][c] and track[b][c] (cells with Taylor factors)."""
        if steps not in self._plans:
            sched = self.schedule.resample(steps)
            arr, fc = sched.compute, sched.forecast
            store = arr.copy()
            if not self.keep_all:
                store[:-1] &= ~arr[1:]  # keep an output only if the next step reuses it
                store[-1] = False
            if self.keep_all and self.track_order is not None:
                track = np.ones(sched.space.shape, dtype=bool)  # every cell: any later plan may forecast it
            else:
                track = None if fc is None else fc.any(0)
            if track is not None:
                store[:, track] = False  # tracked cells reuse their newest factor Δ⁰ (the last output)
            self._plans[steps] = (arr.tolist(), store.tolist(), None if fc is None else fc.tolist(),
                                  None if track is None else track.tolist())
        return self._plans[steps]

    def begin_generation(self, ctx: StepContext) -> None:
        """Reset caches; check or resample the step count."""
        self.state.reset()
        n = ctx.num_steps
        if n is not None and n != self.schedule.steps and not self.resample:
            raise ScheduleError(
                f"schedule {self.schedule.name!r} has {self.schedule.steps} steps but the pipeline runs {n}{ctx.steps_note}: "
                f"call the pipeline with num_inference_steps={self.schedule.steps}, make a schedule for {n} "
                "steps, or pass resample=True to accelerate() or BlockReuseConfig (nearest step in normalized time)"
            )
        self._use(self._plan(n if n is not None and self.resample else self.schedule.steps))

    def should_compute(self, site: Site, ctx: StepContext) -> bool:
        """The schedule's cell for this step."""
        return self._compute[ctx.step][site.block][site.component]

    def compile_patterns(self, per: str = "block") -> int:
        """Distinct patterns of (computed, kept) components over the active plan, per block or per whole step
        (``per="step"``): the number of graphs a compiled block, or the compiled transformer, needs."""
        if per not in ("block", "step"):
            raise ValueError(f"compile_patterns(per={per!r}): per is 'block' or 'step'")
        track = self._track
        pats = set()
        for comp, store in zip(self._compute, self._store):
            row = tuple(
                (tuple(cb), tuple(c and (k or (track is not None and track[b][i])) for i, (c, k) in enumerate(zip(cb, sb))))
                for b, (cb, sb) in enumerate(zip(comp, store))
            )
            if per == "block":
                pats.update(row)
            else:
                pats.add(row)
        return len(pats)

    def keeps(self, site: Site, ctx: StepContext) -> bool:
        """Kept as the plain cache (a later step reuses it) or to refresh a tracked cell's Taylor factors."""
        b, c = site.block, site.component
        return bool(self._store[ctx.step][b][c] or (self._track is not None and self._track[b][c]))

    def store(self, site: Site, ctx: StepContext, output: Any) -> None:
        """Keep the output when a later step may reuse it; refresh a tracked cell's Taylor factors."""
        if self._store[ctx.step][site.block][site.component]:
            self.state.caches.setdefault(ctx.branch, {})[site.block, site.component] = output
        if self._track is not None and self._track[site.block][site.component]:
            cell = self.state.factors.setdefault(ctx.branch, {}).setdefault((site.block, site.component), TaylorFactors())
            cell.update(output, ctx.step, self.order)

    def reuse(self, site: Site, ctx: StepContext) -> Any:
        """The output cached at the last computed step of this branch (or its forecast on forecast cells)."""
        try:
            if self._track is not None and self._track[site.block][site.component]:
                cell = self.state.factors[ctx.branch][site.block, site.component]
                return cell.forecast(ctx.step) if self._fc and self._fc[ctx.step][site.block][site.component] \
                    else cell.factors[0]
            return self.state.caches[ctx.branch][site.block, site.component]
        except KeyError:
            raise RuntimeError(
                f"no cached output for block {site.block_id} {site.name} (branch {ctx.branch}, step {ctx.step}); "
                "the generation must start at step 0 of the schedule"
            ) from None

    def cache_bytes(self) -> int:
        """Bytes held by cached outputs and Taylor factors."""
        return tensor_bytes(self.state.caches) + sum(f.nbytes() for c in self.state.factors.values() for f in c.values())

    def reset(self) -> None:
        """Drop cached outputs."""
        self.state.reset()

    def snapshot(self) -> dict[str, Any]:
        """The cache contents now (references: cached outputs are never modified in place)."""
        factors = {b: {k: (list(f.factors), f.step) for k, f in c.items()} for b, c in self.state.factors.items()}
        return {"caches": {b: dict(c) for b, c in self.state.caches.items()}, "steps": self.num_steps, "factors": factors}

    def restore(self, snap: dict[str, Any]) -> None:
        """Continue from a `snapshot()` of a generation whose plan had the current plan's prefix."""
        self._use(self._plan(snap["steps"]))
        self.state.caches = {b: dict(c) for b, c in snap["caches"].items()}
        self.state.factors = {}
        for b, cells in snap["factors"].items():
            for k, (factors, step) in cells.items():
                f = self.state.factors.setdefault(b, {})[k] = TaylorFactors()
                f.factors, f.step = list(factors), step
