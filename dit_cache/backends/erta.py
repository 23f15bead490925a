"""ERTACache: offline-profiled reuse steps, interval correction and linear residual rectification.

"ERTACache: Error Rectification and Timesteps Adjustment for Efficient Diffusion" (ICLR 2026),
arXiv 2508.21091. The official code was not available to us; parts (2) and (3) follow the
reconstruction in docs/backends.md and are validated by the ablation rows of benchmarks/backends.py.
Profiling (offline, on calibration prompts) lives in `erta_profile`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..schedule import ScheduleSpace
from . import profiles
from .base import BackendConfig, StackResidualMixin, StepContext, Streams, streams_add, tensor_bytes


def uniform_steps(steps: int, count: int) -> list[int]:
    """`count` reuse steps spread evenly over 1..steps−2 (the ablation's profile-free baseline)."""
    cand = list(range(1, steps - 1))
    if count > len(cand):
        raise ValueError(f"cannot reuse {count} of {steps} steps (first and last always run)")
    if count == 0:
        return []
    idx = np.round(np.linspace(0, len(cand) - 1, count + 2)[1:-1] if count < len(cand) else np.arange(len(cand)))
    return sorted({cand[int(i)] for i in idx})


def _correct(residual: Streams, lin: dict | None) -> Streams:
    """R̂ = R + K ⊙ R + b per stream (K, b per channel, the last dim)."""
    if lin is None:
        return residual
    out = []
    for r, k, b in zip(residual, lin["k"], lin["b"]):
        if r is None or k is None:
            out.append(r)
        else:
            kt = torch.as_tensor(k, dtype=r.dtype, device=r.device)
            bt = torch.as_tensor(b, dtype=r.dtype, device=r.device)
            out.append(r + kt * r + bt)
    return tuple(out)


@dataclass
class ERTACacheConfig(BackendConfig):
    """ERTACache (https://arxiv.org/abs/2508.21091) from a profile made by `dit-cache profile --backend erta`.

    On the profile's reuse steps i the whole stack is skipped and its residual R (from the last full
    step) is reused, rectified and rescaled::

        (1) reuse steps: least profiled error of reusing at step i alone (final-output MSE vs uncached)
        (3) R̂_i = R + γ (K_i ⊙ R + b_i)     (K_i, b_i per channel, ridge least squares; γ validated)
        (2) v̂_i = φ_i · T(x_i; R̂_i)         (φ_i rescales the step's update ≡ its integration interval,
                                             fitted on the final-output error of the calibration prompts)

    ``select="uniform"`` ignores the profiled steps and spreads as many reuse steps evenly (ablation
    baseline; corrections only apply on profiled steps). A profile for another model or step count is
    rejected. A profile with no reuse steps never skips.
    """

    profile: str | Path | dict
    select: str = "profile"
    residual_correction: bool = True
    interval_correction: bool = True

    def __post_init__(self) -> None:
        self.check_values()
        if self.select not in ("profile", "uniform"):
            raise ValueError(f"ERTACacheConfig.select must be 'profile' or 'uniform', got {self.select!r}")

    def build_backend(self, space: ScheduleSpace, transformer: nn.Module) -> ERTACacheBackend:
        """A backend for `space` (all families; the profile must be for this family)."""
        prof = profiles.load_profile(self.profile, "erta")
        _check_erta_profile(prof)
        if prof["family"] != space.family:
            raise profiles.ProfileError(f"the ERTACache profile is for family {prof['family']!r}, the model is {space.family!r}")
        steps = prof["reuse_steps"]
        if self.select == "uniform":
            steps = uniform_steps(prof["steps"], len(steps))
        profiles.check_model(prof, transformer, "erta")
        return ERTACacheBackend(self, prof, space.shape[0], frozenset(steps), _prediction_channels(transformer))


def _check_erta_profile(prof: dict) -> None:
    """Raise a ProfileError naming the field when an ERTACache profile is truncated or malformed."""
    n, fix = prof["steps"], "make it again with `dit-cache profile --backend erta`"
    reuse, phi, linear = prof.get("reuse_steps"), prof.get("phi"), prof.get("linear")
    if not isinstance(n, int):
        raise profiles.ProfileError(f"the ERTACache profile must say its step count ('steps'): {fix}")
    if not isinstance(reuse, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i < n for i in reuse):
        raise profiles.ProfileError(f"the ERTACache profile's 'reuse_steps' must be steps 1..{n - 1}, got {reuse!r}: {fix}")
    if not isinstance(phi, list) or len(phi) != n or not all(profiles.is_number(x) for x in phi):
        raise profiles.ProfileError(f"the ERTACache profile's 'phi' must hold {n} numbers (one per step): {fix}")
    if not isinstance(linear, dict) or not all(k.isdigit() and int(k) < n and isinstance(v, dict) and {"k", "b"} <= set(v)
                                               for k, v in linear.items()):
        raise profiles.ProfileError(f"the ERTACache profile's 'linear' corrections are malformed: {fix}")


@dataclass
class _BranchState:
    residual: Streams | None = None
    in0: Streams | None = None


@dataclass
class ERTACacheBackend(StackResidualMixin):
    """Block-level backend for `ERTACacheConfig`."""

    config: ERTACacheConfig
    profile: dict
    n_blocks: int
    reuse_steps: frozenset
    split: int | None  # output channels that are the prediction (learned-sigma models: first half)
    state: dict[int, _BranchState] = field(default_factory=dict)
    _reused: bool = False

    def begin_generation(self, ctx: StepContext) -> None:
        """Check the step count; forget the previous generation."""
        profiles.check_steps(self.profile, ctx.num_steps, "erta")
        self.state.clear()

    def begin_call(self, ctx: StepContext) -> None:
        self._reused = False

    def block_pre(self, block: int, ctx: StepContext, streams: Streams, inputs: object = None):
        """At block 0: skip the stack on reuse steps with input + R̂."""
        if block != 0:
            return None
        st = self.state.setdefault(ctx.branch, _BranchState())
        skip = ctx.step in self.reuse_steps and st.residual is not None
        if skip:
            self._reused = True
            lin = self.profile["linear"].get(str(ctx.step)) if self.config.residual_correction else None
            return streams_add(streams, _correct(st.residual, lin)), self.n_blocks - 1
        st.in0 = streams
        return None

    def end_call(self, ctx: StepContext, output: Any) -> Any:
        """On reuse steps scale the prediction by φ_i (interval correction)."""
        if self._reused and self.config.interval_correction:
            phi = self.profile["phi"][ctx.step]
            if phi != 1.0:
                return _map_output(output, lambda o: _scale(o, phi, self.split))
        return output

    def cache_bytes(self) -> int:
        """Bytes of the cached stack residual per branch."""
        return sum(tensor_bytes((s.residual, s.in0)) for s in self.state.values())

    def reset(self) -> None:
        """Drop all state."""
        self.state.clear()


def _prediction_channels(transformer: torch.nn.Module) -> int | None:
    cfg = getattr(transformer, "config", {})
    cin, cout = cfg.get("in_channels"), cfg.get("out_channels")
    return cin if cin and cout == 2 * cin else None


def _scale(o: torch.Tensor, phi: float, split: int | None) -> torch.Tensor:
    if split is None:
        return o * phi
    return torch.cat([o[:, :split] * phi, o[:, split:]], dim=1)  # (B, C_pred + C_var, ...)


def _pred(o: torch.Tensor, split: int | None) -> torch.Tensor:
    return o[:, :split] if split else o


def _sample(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output.sample


def _map_output(output: Any, fn: Any) -> Any:
    if isinstance(output, tuple):
        return (fn(output[0]), *output[1:])
    return type(output)(sample=fn(output.sample))
