"""Step tracking: which (generation, step, CFG branch) a transformer call belongs to.

Two sources, tried in this order on every call:

1. **The pipeline's scheduler** (when `accelerate()` got a pipeline whose scheduler has a step index —
   DPM-Solver, Euler, Heun, KDPM2, UniPC, flow-matching Euler, ...) while a generation is running: a new
   ``scheduler.timesteps`` tensor (every `set_timesteps`) starts a generation, a step index equal to the
   last call's is the next CFG branch, a larger one the next step. The step is the position in the
   scheduler's timestep sequence, so samplers that evaluate the model twice per step (Heun, KDPM2) have
   one schedule row per evaluation, and no repeated timestep is mistaken for a CFG branch. Nothing is
   read from device tensors: no host sync.
2. **The timestep argument** otherwise (a bare transformer, the search's own loop, schedulers without
   a step index such as DDIM): a repeated timestep is the next branch, a smaller one the next step, a
   larger one a new generation (one host sync per call to read it).

A call that raised (Ctrl-C, OOM, a `check_finite` error) never finished: the next call starts a new
generation instead of continuing from the failed call's state. A handle is not shared between
threads: a call from another thread while one is running raises (one pipeline and handle per thread).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

from .backends.base import StepContext


class StepTracker:
    """Decides for each transformer call whether it starts a generation, repeats a step or moves on."""

    def __init__(self, pipeline: Any = None) -> None:
        sch = getattr(pipeline, "scheduler", None)
        self.scheduler = sch if sch is not None and hasattr(sch, "step_index") else None
        self.value_scheduler = sch  # for the step count when steps come from timestep values
        self.install_timesteps = getattr(self.scheduler, "timesteps", None)  # set before any generation
        self.timesteps: Any = None  # the running generation's scheduler timesteps (scheduler mode)
        self.open = False  # a call began and has not finished
        self.owner: int | None = None  # thread of the open call

    def reset(self, ctx: StepContext) -> None:
        """The next call starts a new generation."""
        self.timesteps, ctx.timestep, self.open = None, None, False

    def _position(self) -> tuple[Any, int, int] | None:
        """(timesteps, evaluation index, evaluations) while the scheduler runs a generation, else None."""
        sch = self.scheduler
        if sch is None:
            return None
        ts = sch.timesteps
        if ts is None or ts is self.install_timesteps:
            return None
        begin = getattr(sch, "begin_index", None) or 0
        idx = sch.step_index
        idx = 0 if idx is None else idx - begin
        total = len(ts) - begin
        return (ts, idx, total) if 0 <= idx < total else None

    def advance(self, ctx: StepContext, read_timestep: Callable[[], float]) -> bool:
        """Update `ctx` for this call; True when it starts a new generation (ctx.num_steps then set)."""
        me = None if torch.compiler.is_compiling() else threading.get_ident()  # (no graph break under compile)
        if self.open and me is not None and self.owner != me:
            raise RuntimeError(
                "this dit-cache handle is inside a transformer call in another thread: a handle holds one "
                "generation's caches at a time, so give each thread its own pipeline and accelerate() each"
            )
        failed, self.open, self.owner = self.open, True, me
        pos = self._position()
        if pos is not None:
            ts, idx, total = pos
            new = failed or ts is not self.timesteps or idx < ctx.step
            self.timesteps, ctx.timestep = ts, None
            if new:
                _start(ctx, idx, total, self._note(total))
            elif idx == ctx.step:
                ctx.branch += 1
            else:
                ctx.step, ctx.branch = idx, 0
            return new
        t = read_timestep()
        new = failed or self.timesteps is not None or ctx.timestep is None or t > ctx.timestep
        self.timesteps = None
        if new:
            _start(ctx, 0, self._value_steps(), "")
        elif t == ctx.timestep:
            ctx.branch += 1
        else:
            ctx.step, ctx.branch = ctx.step + 1, 0
        ctx.timestep = t
        return new

    def close(self) -> None:
        """The call finished."""
        self.open = False

    def _note(self, total: int) -> str:
        """Why the evaluation count differs from num_inference_steps (second-order samplers), else ''."""
        n = getattr(self.scheduler, "num_inference_steps", None)
        if n is None or n == total:
            return ""
        return f" ({type(self.scheduler).__name__} evaluates the transformer {total} times for {n} steps)"

    def _value_steps(self) -> int | None:
        """Distinct timesteps the pipeline's scheduler is set to, if there is a pipeline."""
        ts = getattr(self.value_scheduler, "timesteps", None)
        return int(torch.unique(torch.as_tensor(ts)).numel()) if ts is not None and len(ts) else None


def _start(ctx: StepContext, step: int, num_steps: int | None, note: str) -> None:
    ctx.generation += 1
    ctx.step, ctx.branch, ctx.num_steps, ctx.steps_note = step, 0, num_steps, note
