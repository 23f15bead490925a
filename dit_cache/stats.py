"""Counts of computed and reused component evaluations, and the MACs they imply."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .macs import StepCost
from .schedule import ScheduleSpace


@dataclass
class _ShapeTally:
    """Calls and computed-component counts for one input shape (costs differ per shape)."""

    meta_inputs: Any  # (args, kwargs) as meta tensors, to count MACs lazily
    calls: int = 0
    computed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [blocks, components]
    skipped_blocks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [blocks], whole-block skips


class CacheStats:
    """Per step/block/component counts since the hooks were installed (or since `reset()`)."""

    def __init__(self, space: ScheduleSpace, cost_fn: Callable[[Any, str], StepCost]) -> None:
        self.space = space
        self._cost_fn = cost_fn
        self._costs: dict[tuple, StepCost] = {}
        self.reset()

    def reset(self) -> None:
        """Zero every count."""
        nb, nc = self.space.shape
        self.computed = np.zeros((0, nb, nc), np.int64)  # [steps, blocks, components]
        self.reused = np.zeros((0, nb, nc), np.int64)
        self.generations = 0
        self.calls = 0
        self._tallies: dict[tuple, _ShapeTally] = {}
        self._tally: _ShapeTally | None = None
        self.overhead: dict[str, int] = {}  # MACs backends ran themselves (e.g. TeaCache's gate), per convention

    def begin_call(self, step: int, key: tuple, meta_inputs: Callable[[], Any]) -> None:
        """Start counting one transformer call at `step` whose inputs have shape signature `key`."""
        if step >= self.computed.shape[0]:
            grow = np.zeros((step + 1 - self.computed.shape[0], *self.space.shape), np.int64)
            self.computed = np.concatenate([self.computed, grow])
            self.reused = np.concatenate([self.reused, grow])
        tally = self._tallies.get(key)
        if tally is None:
            nb = self.space.shape[0]
            tally = self._tallies[key] = _ShapeTally(meta_inputs(), 0, np.zeros(self.space.shape, np.int64),
                                                     np.zeros(nb, np.int64))
        tally.calls += 1
        self.calls += 1
        self._tally = tally

    def record_block(self, step: int, block: int, computed: bool) -> None:
        """Count every component of one block as computed or reused (block-level backends); a skipped block
        also skips its work outside the components (`StepCost.block_other`, e.g. FLUX's adaLN linear)."""
        row = self.space.applicable[block]
        if computed:
            self.computed[step, block] += row
            self._tally.computed[block] += row
        else:
            self.reused[step, block] += row
            self.record_skipped_block(block)

    def record_skipped_block(self, block: int) -> None:
        """A block that did not run in this call: its work outside the components did not run either."""
        self._tally.skipped_blocks[block] += 1

    def record(self, step: int, block: int, component: int, computed: bool) -> None:
        """Count one component evaluation (hot path)."""
        if computed:
            self.computed[step, block, component] += 1
            self._tally.computed[block, component] += 1
        else:
            self.reused[step, block, component] += 1

    def record_overhead(self, macs: dict[str, int]) -> None:
        """MACs a backend ran itself during a call, per convention (`Backend.overhead_macs`): counted as executed."""
        for convention, n in macs.items():
            self.overhead[convention] = self.overhead.get(convention, 0) + n

    # -- summaries ---------------------------------------------------------------------------
    @property
    def evaluations(self) -> int:
        """Component evaluations actually run."""
        return int(self.computed.sum())

    @property
    def skipped(self) -> int:
        """Component evaluations replaced by cached or forecast values."""
        return int(self.reused.sum())

    def compute_fraction(self) -> float:
        """Computed / (computed + reused) over all recorded evaluations."""
        total = self.evaluations + self.skipped
        return self.evaluations / total if total else 1.0

    def _cost(self, key: tuple, tally: _ShapeTally, convention: str) -> StepCost:
        if (key, convention) not in self._costs:
            self._costs[key, convention] = self._cost_fn(tally.meta_inputs, convention)
        return self._costs[key, convention]

    def macs(self, convention: str = "full") -> dict[str, float]:
        """MACs executed vs a run that computes everything, over all recorded calls."""
        executed = full = 0
        for key, t in self._tallies.items():
            cost = self._cost(key, t, convention)
            executed += (t.calls * (cost.outside + int(cost.block_other.sum())) - int((t.skipped_blocks * cost.block_other).sum())
                         + int((t.computed * cost.component).sum()))
            full += t.calls * cost.full
        executed += self.overhead.get(convention, 0)
        return {"executed": executed, "full": full, "speedup": full / executed if executed else 1.0}

    def summary(self, convention: str = "full") -> dict[str, Any]:
        """JSON-ready summary: counts, fraction, MACs."""
        return {
            "generations": self.generations,
            "transformer_calls": self.calls,
            "evaluations": self.evaluations,
            "skipped": self.skipped,
            "compute_fraction": self.compute_fraction(),
            "macs": self.macs(convention),
            "computed_per_step": self.computed.sum((1, 2)).tolist(),
        }
