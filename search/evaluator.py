"""Generate the calibration batch under many candidate schedules, sharing exact prefixes.

Candidates are run in lexicographic order of their step rows, so each one shares the longest prefix
with the one before it; states after every step go to an LRU `StateCache` (memory budget), which also
carries shared prefixes across generations of the search.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import dit_cache as dc
from dit_cache.macs import StepCost, meta_like, meta_model_of, schedule_macs, step_cost

from .loops import make_loop
from .prefix import StateCache, prefix_keys

DEFAULT_BUDGET = 2 << 30  # bytes of stored prefix states per process


@dataclass
class EvalCounts:
    """Transformer work spent: denoising steps run vs steps a naive evaluation would run; a step evaluates
    every block once per transformer call (twice with separate cond / uncond calls: FLUX true CFG, Wan)."""

    steps_run: int = 0
    steps_naive: int = 0
    blocks_per_step: int = 0
    candidates: int = 0

    @property
    def block_evals(self) -> int:
        """Transformer block evaluations actually run (one per block per transformer call of a step)."""
        return self.steps_run * self.blocks_per_step

    @property
    def block_evals_naive(self) -> int:
        """Block evaluations without prefix sharing."""
        return self.steps_naive * self.blocks_per_step

    def add(self, other: EvalCounts) -> None:
        """Accumulate another count."""
        self.steps_run += other.steps_run
        self.steps_naive += other.steps_naive
        self.candidates += other.candidates
        self.blocks_per_step = other.blocks_per_step or self.blocks_per_step

    def to_dict(self) -> dict[str, int]:
        """JSON-ready counts."""
        return {"candidates": self.candidates, "steps_run": self.steps_run, "steps_naive": self.steps_naive,
                "block_evals": self.block_evals, "block_evals_naive": self.block_evals_naive}


@dataclass
class Evaluator:
    """Runs candidate schedules on a pipeline of any family with a loop (`search.loops`) for fixed prompts
    and seeds (batched)."""

    pipe: Any
    prompts: list[str]
    seeds: list[int]
    steps: int
    batch_size: int = 16
    budget_bytes: int = DEFAULT_BUDGET
    prefix_sharing: bool = True
    forecast_order: int | None = None  # mixed genomes (reuse / compute / forecast cells) when set
    spill_dir: str | None = None  # evicted prefix states are written here (None: dropped)
    spill_bytes: int = 0  # disk budget of spilled states
    call_defaults: dict[str, Any] | None = None  # guidance, text length and size of the model's `pipe(...)` calls
    counts: EvalCounts = field(default_factory=EvalCounts)

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ValueError("no prompts to evaluate on")
        self.space = dc.space_of(self.pipe.transformer)
        bs = max(1, self.batch_size)
        self.loops = [make_loop(self.pipe, self.prompts[i:i + bs], self.seeds[i:i + bs], self.steps, self.call_defaults)
                      for i in range(0, len(self.prompts), bs)]
        # one static backend whose plan is swapped per candidate; it keeps every computed output (and, for
        # mixed genomes, every cell's Taylor factors), so a stored state fits every candidate with its prefix
        self.backend = dc.StaticScheduleBackend(dc.compute_all(self.space, self.steps), keep_all=True,
                                                forecast_order=self.forecast_order)
        self.handle = dc.accelerate(self.pipe.transformer, self.backend)
        self.cache = StateCache(self.budget_bytes if self.prefix_sharing else 0, self.spill_dir, self.spill_bytes)
        self.counts.blocks_per_step = len(self.space.block_ids) * len(self.loops[0].cost_calls())  # x calls per step
        self._cost: StepCost | None = None

    def close(self) -> None:
        """Remove the hooks and drop stored states."""
        self.handle.remove()
        self.cache.clear()

    def check(self, schedule: dc.Schedule | np.ndarray) -> None:
        """Raise a clear error if a schedule (or mixed int8 genome) does not fit this model and step count."""
        if isinstance(schedule, np.ndarray):
            if self.forecast_order is None:
                raise TypeError("mixed genomes need an Evaluator with forecast_order set")
            if schedule.shape != (self.steps, *self.space.shape):
                raise dc.ScheduleError(f"genome shape {schedule.shape} != {(self.steps, *self.space.shape)}")
            return
        why = schedule.space.describe_mismatch(self.space)
        if why:
            raise dc.ScheduleError(f"schedule {schedule.name!r} does not fit the search model: {why}")
        if schedule.steps != self.steps:
            raise dc.ScheduleError(f"schedule {schedule.name!r} has {schedule.steps} steps; the search runs {self.steps}")

    def as_schedule(self, schedule: dc.Schedule | np.ndarray) -> dc.Schedule:
        """A candidate as a Schedule (mixed int8 genomes: compute / reuse / forecast cells of the search's order)."""
        if isinstance(schedule, dc.Schedule):
            return schedule
        return dc.Schedule.from_cells(schedule, self.space, {}, self.forecast_order or 0)

    def _run_one(self, b: int, schedule: dc.Schedule | np.ndarray, keys: list[str]) -> torch.Tensor:
        loop = self.loops[b]
        state = self.cache.longest(b, keys, self.steps - 1) if self.prefix_sharing else None
        self.backend.set_schedule(self.as_schedule(schedule))
        if state is None:
            self.handle.reset()
            state = loop.initial_state()
        else:
            self.handle.restore(state.cache)
        while state.step < self.steps - 1:
            state = loop.step(state, self.handle)
            self.counts.steps_run += 1
            if self.prefix_sharing and state.step < self.steps - 1:
                self.cache.put((b, keys[state.step]), state)
        self.counts.steps_naive += self.steps
        return loop.final(state.latents)

    def evaluate(self, schedules: list[dc.Schedule | np.ndarray], keep: list[np.ndarray] | None = None,
                 batches: list[int] | None = None) -> list[torch.Tensor]:
        """Final latents (N, ...) over all prompts, one tensor per schedule, in input order.

        ``keep``: genomes whose prefix states are worth keeping (the parents of these candidates).
        ``batches``: only these prompt batches (of `batch_size` prompts), in order (default all).
        """
        for s in schedules:
            self.check(s)
        if keep is not None:
            pins = {k for g in keep for k in prefix_keys(g)[:-1]}
            self.cache.pin({(b, k) for b in range(len(self.loops)) for k in pins})
        keys = [prefix_keys(s) for s in schedules]
        raw = [s if isinstance(s, np.ndarray) else s.compute for s in schedules]
        order = sorted(range(len(schedules)), key=lambda i: raw[i].tobytes())
        out: list[list[torch.Tensor]] = [[] for _ in schedules]
        with torch.inference_mode():
            for b in (range(len(self.loops)) if batches is None else batches):
                for i in order:
                    out[i].append(self._run_one(b, schedules[i], keys[i]))
        self.counts.candidates += len(schedules)
        return [torch.cat(parts) for parts in out]

    def step_cost(self) -> StepCost:
        """Exact MACs of one denoising step for one prompt: every transformer call of the step (a CFG batch of 2,
        or separate cond / uncond calls), full convention."""
        if self._cost is None:
            model = meta_model_of(self.pipe.transformer)
            costs = [step_cost(model, *meta_like(call), convention="full") for call in self.loops[0].cost_calls()]
            self._cost = StepCost(sum(c.component for c in costs), sum(c.block_other for c in costs),
                                  sum(c.outside for c in costs), "full")
        return self._cost

    def macs(self, schedule: dc.Schedule | np.ndarray) -> int:
        """Exact MACs of one image's generation under `schedule` (mixed genome: computed cells = 1;
        forecasts are elementwise work, not counted)."""
        compute = schedule.compute if isinstance(schedule, dc.Schedule) else np.asarray(schedule) == 1
        return int(schedule_macs(compute, self.step_cost()).sum())

