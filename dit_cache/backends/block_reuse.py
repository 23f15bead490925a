"""Block-residual reuse of a static schedule: a block whose every component is reused skips all of its work.

Under ECAD semantics (`static.StaticScheduleBackend`) a reused component returns its cached output, but the
block still recomputes its norms, adaLN modulation, gates and residual adds around it. With
`BlockReuseConfig` a block whose every applicable component the schedule reuses at step i (none computed,
none forecast) returns its input plus the block residual cached at the last step it ran — as FORA's
"reuse the layer output" reads literally, and as Δ-DiT (arXiv 2406.01125) and First-Block Cache reuse
residuals of whole blocks::

    x_{i,l+1} = x_{i,l} + (x_{j,l+1} − x_{j,l}),   j = max{j < i : block l ran at step j}

so such a block costs one add per stream (no norms, no modulation). Blocks that compute or forecast any
component at step i run as under ECAD semantics. Same MACs as the schedule (block-internal work outside
the components, e.g. FLUX's adaLN linear, is skipped too), different numbers: a block's modulation no
longer follows the timestep on its skipped steps. Schedules searched under ECAD semantics keep their
ranking only approximately; measure before relying on a front (README, "Cheaper reuse").

    dc.accelerate(pipe, dc.BlockReuseConfig("front_03.json"))     # or a Schedule, e.g. dc.fora(space, 20, 4)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..adapters import Site
from ..schedule import Schedule, ScheduleSpace
from .base import BackendConfig, StepContext, Streams, tensor_bytes
from .static import Plan, StaticScheduleBackend, schedule_backend


def _needed(compute: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """[steps, blocks, components]: the output computed at step s is reused later by a block that runs (some
    step r > s before the cell's next compute where block b is not skipped)."""
    steps = compute.shape[0]
    need = np.zeros(compute.shape, bool)
    for s in range(steps):
        alive = np.ones(compute.shape[1:], bool)
        for r in range(s + 1, steps):
            alive &= ~compute[r]
            need[s] |= alive & ~skip[r][:, None]
    return need


@dataclass
class BlockReuseConfig(BackendConfig):
    """A static schedule whose fully reused blocks return input + cached block residual (see the module)."""

    schedule: Schedule | str | Path
    resample: bool = False  # adapt the schedule to the pipeline's step count (nearest step)

    def build_backend(self, space: ScheduleSpace, transformer: nn.Module) -> BlockReuseBackend:
        return schedule_backend(self.schedule, space, resample=self.resample, cls=BlockReuseBackend)


class BlockReuseBackend(StaticScheduleBackend):
    """`StaticScheduleBackend` plus a per-(step, block) plan: skip (input + residual) or run, keep its residual."""

    reuses_blocks = True

    def __init__(self, schedule: Schedule, *, resample: bool = False) -> None:
        self.residuals: dict[int, dict[int, Streams]] = {}  # branch -> block -> out − in at its last kept run
        super().__init__(schedule, resample=resample)

    def _plan(self, steps: int) -> Plan:
        """ECAD's plan, with component outputs kept only for reuses inside blocks that run; plus skip[s][b]
        (every applicable component reused, none forecast; never on step 0) and keep[s][b] (the block runs at s
        and is skipped at s + 1)."""
        if steps not in self._plans:
            sched = self.schedule.resample(steps)
            arr, app = sched.compute, sched.space.applicable
            fc = sched.forecast if sched.forecast is not None else np.zeros_like(arr)
            skip = ~((arr | fc) & app[None]).any(2)
            skip[0] = False
            keep = ~skip & np.append(skip[1:], np.zeros((1, skip.shape[1]), bool), 0)
            compute, store, fcl, track = super()._plan(steps)
            store = np.array(store, bool)
            self._plans[steps] = (compute, (store & _needed(arr, skip)).tolist(), fcl, track, skip.tolist(), keep.tolist())
        return self._plans[steps]

    def _use(self, plan: Plan) -> None:
        self._compute, self._store, self._fc, self._track, self._skip, self._keep = plan

    def begin_generation(self, ctx: StepContext) -> None:
        """Reset caches and residuals; check or resample the step count."""
        self.residuals.clear()
        super().begin_generation(ctx)

    def block_plan(self, block: int, ctx: StepContext) -> tuple[bool, bool]:
        """(skip the block: return input + residual, keep this run's residual for a later skip)."""
        return self._skip[ctx.step][block], self._keep[ctx.step][block]

    def block_residual(self, block: int, ctx: StepContext) -> Streams:
        """The residual of this block's last kept run in this branch."""
        try:
            return self.residuals[ctx.branch][block]
        except KeyError:
            raise RuntimeError(f"no cached residual for block {block} (branch {ctx.branch}, step {ctx.step}); "
                               "the generation must start at step 0 of the schedule") from None

    def store_block(self, block: int, ctx: StepContext, residual: Streams) -> None:
        """Keep a run's residual out − in for the block's next skipped steps."""
        self.residuals.setdefault(ctx.branch, {})[block] = residual

    def reuse(self, site: Site, ctx: StepContext) -> Any:
        """None inside a skipped block (the component does not run there); else the cached output."""
        return None if self._skip[ctx.step][site.block] else super().reuse(site, ctx)

    def compile_patterns(self, per: str = "block") -> int:
        """Distinct (components, block skip/keep) patterns per block or per step (graphs when compiled)."""
        if per not in ("block", "step"):
            raise ValueError(f"compile_patterns(per={per!r}): per is 'block' or 'step'")
        rows = [tuple((tuple(c), tuple(k), s, kb) for c, k, s, kb in zip(cs, ks, ss, kbs))
                for cs, ks, ss, kbs in zip(self._compute, self._store, self._skip, self._keep)]
        return len({p for row in rows for p in row}) if per == "block" else len(set(rows))

    def cache_bytes(self) -> int:
        """Bytes held by cached outputs and residuals."""
        return super().cache_bytes() + tensor_bytes(self.residuals)

    def reset(self) -> None:
        """Drop cached outputs and residuals."""
        super().reset()
        self.residuals.clear()

    def snapshot(self) -> dict[str, Any]:
        raise NotImplementedError("BlockReuseBackend cannot snapshot (the search runs schedules under ECAD semantics)")
