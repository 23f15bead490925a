"""ERTACache offline profiling: reuse steps by residual error, linear residual correction, interval correction.

`profile_erta(pipe, calls, num_reuse=...)` runs the model uncached on calibration calls and returns the
JSON-ready profile that `ERTACacheConfig` applies (see docs/backends.md for the reconstruction).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers.hooks import HookRegistry, ModelHook

from ..adapters import get_adapter
from . import profiles
from .base import BlockBackend, StepContext, Streams, rel_l1, streams_add, streams_sub
from .erta import ERTACacheConfig, _correct, _pred, _prediction_channels, _sample

PROBE_HOOK = "dit_cache.erta_probe"


def _cpu(streams: Streams) -> Streams:
    return tuple(None if s is None else s.detach().float().cpu() for s in streams)


@dataclass
class _Recorder(BlockBackend):
    """Never skips (except in probe calls); records stack residuals and outputs per (generation, step, branch)."""

    n_blocks: int
    reuse: frozenset = frozenset()
    linear: dict = field(default_factory=dict)
    residuals: dict[tuple[int, int, int], Streams] = field(default_factory=dict)
    outputs: dict[tuple[int, int, int], torch.Tensor] = field(default_factory=dict)
    probes: dict[tuple[int, int, int], torch.Tensor] = field(default_factory=dict)
    probing: bool = False
    _key: tuple[int, int, int] = (-1, -1, -1)
    _in0: Streams | None = None

    def begin_generation(self, ctx: StepContext) -> None:
        self._key = (-1, -1, -1)

    def begin_call(self, ctx: StepContext) -> None:
        if self.probing:
            return
        g, s, b = self._key
        self._key = (ctx.generation, ctx.step, b + 1 if (g, s) == (ctx.generation, ctx.step) else 0)

    def wants_probe(self) -> bool:
        g, s, b = self._key
        return s in self.reuse and (g, s - 1, b) in self.residuals

    def block_pre(self, block: int, ctx: StepContext, streams: Streams, inputs: object = None):
        if block != 0:
            return None
        if self.probing:
            g, s, b = self._key
            prev = tuple(None if r is None or x is None else r.to(device=x.device, dtype=x.dtype)
                         for r, x in zip(self.residuals[g, s - 1, b], streams))
            return streams_add(streams, _correct(prev, self.linear.get(str(s)))), self.n_blocks - 1
        self._in0 = streams
        return None

    def block_post(self, block: int, ctx: StepContext, streams_in: Streams, streams_out: Streams) -> None:
        if block == self.n_blocks - 1 and not self.probing:
            self.residuals[self._key] = _cpu(streams_sub(streams_out, self._in0))

    def end_call(self, ctx: StepContext, output: Any) -> Any:
        (self.probes if self.probing else self.outputs)[self._key] = _sample(output).detach().float().cpu()
        return output


class _ProbeHook(ModelHook):
    """Outermost transformer hook: on reuse steps run the call a second time with the stack reused."""

    def __init__(self, rec: _Recorder) -> None:
        super().__init__()
        self.rec = rec

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        out = self.fn_ref.original_forward(*args, **kwargs)
        if self.rec.wants_probe():
            self.rec.probing = True
            try:
                self.fn_ref.original_forward(*args, **kwargs)
            finally:
                self.rec.probing = False
        return out


def _record(pipe: Any, calls: Sequence[dict], rec: _Recorder, probe: bool) -> None:
    from ..runtime import accelerate

    handle = accelerate(pipe, rec)
    registry = HookRegistry.check_if_exists_or_initialize(pipe.transformer)
    if probe:
        registry.register_hook(_ProbeHook(rec), PROBE_HOOK)
    try:
        profiles.run_calls(pipe, calls)
    finally:
        if probe:
            registry.remove_hook(PROBE_HOOK, recurse=False)
        handle.remove()


def _select(errors: np.ndarray, count: int, max_consecutive: int) -> list[int]:
    """The `count` steps of 1..S−2 with the least total error, at most `max_consecutive` in a row (exact DP)."""
    cand = list(range(1, len(errors) - 1))
    n, m = len(cand), max(1, max_consecutive)

    @functools.cache
    def best(t: int, c: int, run: int) -> float:
        if c == 0:
            return 0.0
        if n - t < c:
            return math.inf
        take = errors[cand[t]] + best(t + 1, c - 1, run + 1) if run < m else math.inf
        return min(take, best(t + 1, c, 0))

    if best(0, count, 0) == math.inf:
        raise profiles.ProfileError(
            f"cannot choose {count} reuse steps of {len(errors)} with at most {max_consecutive} in a row"
        )
    chosen, c, run = [], count, 0
    for t in range(n):
        if c == 0:
            break
        if run < m and best(t, c, run) == errors[cand[t]] + best(t + 1, c - 1, run + 1):
            chosen.append(cand[t])
            c, run = c - 1, run + 1
        else:
            run = 0
    return chosen


def _fit_linear(x: torch.Tensor, y: torch.Tensor, ridge: float) -> tuple[list[float], list[float]]:
    """Per-channel (ridge) least squares y − x ≈ K x + b over rows of (M, D) tensors."""
    d = y - x
    xm, dm = x.mean(0), d.mean(0)
    xc = x - xm
    k = (xc * (d - dm)).sum(0) / ((1 + ridge) * (xc * xc).sum(0) + 1e-12)  # ridge: relative shrinkage of K
    b = dm - k * xm
    return k.tolist(), b.tolist()


def _outputs(pipe: Any, calls: Sequence[dict]) -> list[torch.Tensor]:
    """Final outputs (latents, or images) of every call."""
    outs = []
    with torch.no_grad():
        for kw in calls:
            kw = {**kw, "generator": profiles.fresh_generator(kw.get("generator"))}
            o = pipe(**kw)
            outs.append(torch.as_tensor(o.frames if hasattr(o, "frames") else o.images).float())
    return outs


def _final_errors(pipe: Any, calls: Sequence[dict], family: str, n_steps: int) -> np.ndarray:
    """e_i = MSE of the final output when only step i reuses (uncorrected) vs uncached, for i in 1..S−2."""
    from ..runtime import accelerate

    ref = _outputs(pipe, calls)
    fp = profiles.model_fingerprint(pipe.transformer)
    errors = np.zeros(n_steps)
    for i in range(1, n_steps - 1):
        prof = profiles.new_profile(backend="erta", family=family, fingerprint=fp, steps=n_steps, reuse_steps=[i],
                                    phi=[1.0] * n_steps, linear={})
        with accelerate(pipe, ERTACacheConfig(prof)):
            outs = _outputs(pipe, calls)
        errors[i] = float(np.mean([((o - r) ** 2).mean() for o, r in zip(outs, ref)]))
    return errors


def _final_error(pipe: Any, calls: Sequence[dict], ref: list[torch.Tensor], prof: dict) -> float:
    """Mean squared error of the final outputs under `prof` against the uncached `ref`."""
    from ..runtime import accelerate

    with accelerate(pipe, ERTACacheConfig(prof)):
        outs = _outputs(pipe, calls)
    return float(np.mean([((o - r) ** 2).mean() for o, r in zip(outs, ref)]))


def _scaled(linear: dict, gamma: float) -> dict:
    """The linear corrections with K and b multiplied by gamma."""
    return {i: {"k": [None if k is None else [gamma * x for x in k] for k in lin["k"]],
                "b": [None if b is None else [gamma * x for x in b] for b in lin["b"]]} for i, lin in linear.items()}


def _fit_phi(pipe: Any, calls: Sequence[dict], ref: list[torch.Tensor], prof: dict, reuse: list[int],
             h: float) -> tuple[list[float], float]:
    """Trajectory-aware φ (one value for all reuse steps: few calibration prompts overfit per-step values):
    minimum of the parabola through the final error at φ = 1 − h, 1, 1 + h, kept only if it lowers it."""

    def with_phi(x: float) -> list[float]:
        return [1.0 + x if i in reuse else 1.0 for i in range(len(prof["phi"]))]

    e = {x: _final_error(pipe, calls, ref, {**prof, "phi": with_phi(x)}) for x in (-h, 0.0, h)}
    a = (e[-h] + e[h] - 2 * e[0.0]) / (2 * h * h)
    b = (e[h] - e[-h]) / (2 * h)
    if a > 0:
        x = float(np.clip(-b / (2 * a), -2 * h, 2 * h))
        e[x] = e.get(x) if x in e else _final_error(pipe, calls, ref, {**prof, "phi": with_phi(x)})
    best = min(e, key=e.get)
    return with_phi(best), e[best]


def _recorded_errors(rec: _Recorder, criterion: str, n_steps: int, split: int | None) -> np.ndarray:
    """e_i per step from the recorded run: probe-vs-uncached prediction MSE ("output") or residual change."""
    keys = sorted(rec.residuals)
    errors = np.zeros(n_steps)
    for i in range(1, n_steps):
        if criterion == "output":
            es = [float(((_pred(rec.probes[k], split) - _pred(rec.outputs[k], split)) ** 2).mean())
                  for k in keys if k[1] == i and k in rec.probes]
        else:
            es = [rel_l1(rec.residuals[g, i - 1, b], rec.residuals[g, i, b]) for g, s, b in keys if s == i]
        errors[i] = float(np.mean(es)) if es else 0.0
    return errors


def _fit_step(rec: _Recorder, i: int, ridge: float) -> dict[str, list]:
    """K_i, b_i per stream: ridge least squares of R_i on R_{i−1} over every recorded call of step i."""
    pairs = [(rec.residuals[g, i - 1, b], rec.residuals[g, i, b]) for g, s, b in sorted(rec.residuals) if s == i]
    ks, bs = [], []
    for j in range(len(pairs[0][0])):
        if pairs[0][0][j] is None or pairs[0][1][j] is None:
            ks.append(None)
            bs.append(None)
            continue
        x = torch.cat([p[0][j].reshape(-1, p[0][j].shape[-1]) for p in pairs])  # (M, D)
        y = torch.cat([p[1][j].reshape(-1, p[1][j].shape[-1]) for p in pairs])
        k, b = _fit_linear(x.double(), y.double(), ridge)
        ks.append(k)
        bs.append(b)
    return {"k": ks, "b": bs}


def profile_erta(pipe: Any, calls: Sequence[dict], *, num_reuse: int, max_consecutive: int = 1,
                 ridge: float = 0.1, criterion: str = "final", phi_step: float = 0.05,
                 step_errors: Sequence[float] | None = None, fit_corrections: bool = True,
                 model: str = "") -> dict[str, Any]:
    """Profile ERTACache on uncached runs of `calls` (pipeline kwargs, one step count); returns the profile dict.

    (1) Reuse steps: e_i = error of reusing at step i alone, by ``criterion``: ``"final"`` MSE of the
    final output vs uncached (includes the sampler's amplification; S−2 extra generations per call),
    ``"output"`` MSE of step i's prediction (a probe re-runs step i reusing R_{i−1}), ``"residual"``
    |R_i − R_{i−1}|₁ / |R_{i−1}|₁. The `num_reuse` steps of least e_i, at most `max_consecutive` in a row.
    (3) K_i, b_i by ridge least squares, teacher-forced on R_{i−1} → R_i of the uncached trajectory
    (ridge = relative shrinkage of K); then one scale γ ∈ {0, ¼, ½, 1} of all corrections, the one with
    the least final error on the calibration calls. (2) one φ for all reuse steps: minimum of a parabola
    through the final error at φ = 1 − h, 1, 1 + h (h = `phi_step`), kept only if it lowers it.
    ``step_errors`` reuses the e_i of an earlier profile of the same calls (profiles at several budgets).
    ``fit_corrections=False`` skips the γ and φ fits (γ = 1, φ = 1; fast, for tests).
    """
    from ..runtime import space_of

    if criterion not in ("final", "output", "residual"):
        raise ValueError(f"criterion must be 'final', 'output' or 'residual', got {criterion!r}")
    steps = {c.get("num_inference_steps") for c in calls}
    if len(steps) != 1 or None in steps:
        raise profiles.ProfileError("every calibration call must set the same num_inference_steps")
    n_steps = steps.pop()
    space = space_of(pipe.transformer)
    split = _prediction_channels(pipe.transformer)
    rec = _Recorder(space.shape[0], reuse=frozenset(range(1, n_steps - 1)) if criterion == "output" else frozenset())
    _record(pipe, calls, rec, probe=criterion == "output")
    if step_errors is not None:
        errors = np.asarray(step_errors, dtype=float)
        if errors.shape != (n_steps,):
            raise ValueError(f"step_errors has {errors.size} entries, expected {n_steps}")
    elif criterion == "final":
        errors = _final_errors(pipe, calls, space.family, n_steps)
    else:
        errors = _recorded_errors(rec, criterion, n_steps, split)
    reuse = _select(errors, num_reuse, max_consecutive) if num_reuse else []
    linear = {str(i): _fit_step(rec, i, ridge) for i in reuse}
    prof = profiles.new_profile(**{
        "backend": "erta", "family": space.family, "model": model,
        "fingerprint": profiles.model_fingerprint(pipe.transformer), "steps": n_steps, "prompts": len(calls),
        "criterion": criterion, "reuse_steps": reuse, "step_errors": [float(e) for e in errors],
        "phi": [1.0] * n_steps, "linear": linear, "streams": list(get_adapter(space.family).block_outputs),
    })
    if reuse and fit_corrections:
        ref = _outputs(pipe, calls)
        fit = {g: _final_error(pipe, calls, ref, {**prof, "linear": _scaled(linear, g)}) for g in (0.0, 0.25, 0.5, 1.0)}
        gamma = min(fit, key=fit.get)
        prof["linear"], prof["linear_scale"] = _scaled(linear, gamma), gamma
        prof["phi"], err = _fit_phi(pipe, calls, ref, prof, reuse, phi_step)
        prof["calibration_mse"] = {"uncorrected": fit[0.0], "linear": fit[gamma], "linear+phi": err}
    return prof
