"""TeaCache: skip the whole stack while the accumulated rescaled change of block 0's modulated input is small.

"Timestep Embedding Tells: It's Time to Cache for Video Diffusion Model" (CVPR 2025), arXiv 2411.19108.

Block 0's timestep-modulated input is recomputed from the block's own inputs and submodules (no copy
of a model forward), per family:

* flux, sd3, dit: ``block.norm1(hidden_states, temb / timestep, ...)[0]`` (AdaLayerNormZero output);
* pixart: ``norm1(h) · (1 + scale_msa) + shift_msa`` from ``scale_shift_table + timestep`` (adaLN-single);
* wan: the same from ``scale_shift_table + temb`` in float32;
* a transformer with an inferred adapter (``generic-*``, `adapters.generic`): block 0's input hidden states
  (its modulation is unknown).

For flux/sd3/dit this re-runs norm1's small adaLN linear once per call; `handle.stats` counts it as the
backend's overhead (`Backend.overhead_macs`, measured once per input shape under torch's FLOP counter).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from ..macs import counted_macs
from ..schedule import ScheduleSpace
from . import profiles
from .base import (
    BackendConfig,
    BlockBackend,
    StackResidualMixin,
    StepContext,
    Streams,
    check_family,
    rel_l1,
    streams_add,
    tensor_bytes,
)
from .limits import SkipCounter, SkipLimits

FAMILIES = ("pixart", "dit", "flux", "sd3", "wan")
# Published TeaCache polynomial for FLUX.1-dev (rel-L1 of modulated input -> of output), highest power first.
FLUX_DEV_COEFFICIENTS = (4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01)


def modulated_input(family: str, block: torch.nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """Block 0's timestep-modulated input, recomputed from the block's call arguments."""
    a = inspect.signature(type(block).forward).bind(block, *args, **kwargs).arguments
    hs = a["hidden_states"]  # (B, N, D)
    if family in ("flux", "sd3"):
        return block.norm1(hs, emb=a["temb"])[0]
    if family == "dit":
        return block.norm1(hs, a["timestep"], a.get("class_labels"), hidden_dtype=hs.dtype)[0]
    if family == "pixart":
        shift, scale = (block.scale_shift_table[None] + a["timestep"].reshape(hs.shape[0], 6, -1)).chunk(6, dim=1)[:2]
        return block.norm1(hs) * (1 + scale) + shift
    if family == "wan":
        temb = a["temb"]
        if temb.ndim == 4:  # (B, N, 6, D): per-token modulation (Wan2.2 TI2V)
            shift, scale = (block.scale_shift_table.unsqueeze(0) + temb.float()).chunk(6, dim=2)[:2]
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:  # (B, 6, D)
            shift, scale = (block.scale_shift_table + temb.float()).chunk(6, dim=1)[:2]
        return block.norm1(hs.float()) * (1 + scale) + shift
    if family.startswith("generic-"):  # an inferred adapter: block 0's input change (no known modulation)
        return hs
    check_family("TeaCache", family, FAMILIES)
    raise AssertionError("unreachable")


@dataclass
class TeaCacheConfig(BackendConfig):
    """TeaCache (https://arxiv.org/abs/2411.19108): accumulated polynomial-rescaled input change gate.

    With m_i block 0's modulated input and p a 4th-order polynomial fitted per model::

        d_i = p(mean|m_i − m_{i−1}| / mean|m_{i−1}|),   A ← A + d_i
        A < δ:  output = input + R     (all blocks skipped; R the cached whole-stack residual)
        else:   run all blocks, R ← out − in, A ← 0

    First and last steps always run. ``coefficients`` (highest power first) or ``profile`` (a JSON from
    `dit-cache profile --backend teacache`, which fits p on calibration prompts); neither = p(x) = x.
    Published δ for FLUX: 0.25 / 0.4 / 0.6 / 0.8 → 1.5 / 1.8 / 2.0 / 2.25× with `FLUX_DEV_COEFFICIENTS`.
    ``threshold=0`` never skips. Separate state per CFG branch. ``limits`` (`SkipLimits`): warm-up, max
    consecutive / total skips, forced refresh steps (an overruled skip resets A like a computed step).
    """

    threshold: float = 0.25
    coefficients: Sequence[float] | None = None
    profile: str | Path | dict | None = None
    limits: SkipLimits = field(default_factory=SkipLimits)

    def __post_init__(self) -> None:
        self.check_values()
        if not isinstance(self.limits, SkipLimits):
            raise ValueError(f"{type(self).__name__}.limits must be a SkipLimits, got {self.limits!r}")
        if self.threshold < 0:
            raise ValueError(f"TeaCacheConfig.threshold must be >= 0, got {self.threshold}")
        if self.coefficients is not None and self.profile is not None:
            raise ValueError("give TeaCacheConfig either coefficients or a profile, not both")

    def build_backend(self, space: ScheduleSpace, transformer: nn.Module) -> TeaCacheBackend:
        """A backend for `transformer` (families: pixart, dit, flux, sd3, wan; a profile must be for this model)."""
        if not space.family.startswith("generic-"):
            check_family("TeaCache", space.family, FAMILIES)
        coeffs = self.coefficients
        prof = None
        if self.profile is not None:
            prof = profiles.load_profile(self.profile, "teacache")
            profiles.check_model(prof, transformer, "teacache")
            coeffs = prof.get("coefficients")
            if not isinstance(coeffs, list) or not coeffs or not all(profiles.is_number(c) for c in coeffs):
                raise profiles.ProfileError(f"the TeaCache profile's 'coefficients' must be a list of numbers, got "
                                            f"{coeffs!r}: make it again with `dit-cache profile --backend teacache`")
        return TeaCacheBackend(self, space.family, space.shape[0], np.asarray(coeffs if coeffs is not None else [1.0, 0.0]),
                               prof)


@dataclass
class _BranchState:
    prev_m: torch.Tensor | None = None  # modulated input of the previous step
    residual: Streams | None = None  # whole-stack residual of the last full step
    in0: Streams | None = None  # stack input during a full step
    acc: float = 0.0
    count: SkipCounter = field(default_factory=SkipCounter)


@dataclass
class TeaCacheBackend(StackResidualMixin):
    """Block-level backend for `TeaCacheConfig`."""

    config: TeaCacheConfig
    family: str
    n_blocks: int
    coefficients: np.ndarray
    profile: dict | None = None
    state: dict[int, _BranchState] = field(default_factory=dict)
    gate_costs: dict[tuple, dict[str, int]] = field(default_factory=dict)  # input shapes -> the gate's MACs
    _overhead: dict[str, int] = field(default_factory=dict)  # the gate's MACs in the current call

    def begin_generation(self, ctx: StepContext) -> None:
        """Check a profile's step count; forget the previous generation."""
        if self.profile is not None:
            profiles.check_steps(self.profile, ctx.num_steps, "teacache")
        self.state.clear()

    def _gate_input(self, inputs: tuple) -> torch.Tensor:
        """Block 0's modulated input; its MACs (counted once per input shape) are this call's overhead."""
        key = tuple(tuple(x.shape) for x in tree_leaves(inputs[1:]) if isinstance(x, torch.Tensor))
        if key in self.gate_costs:
            m = modulated_input(self.family, *inputs)
        else:
            m, self.gate_costs[key] = counted_macs(modulated_input, self.family, *inputs)
        self._overhead = self.gate_costs[key]
        return m

    def overhead_macs(self) -> dict[str, int]:
        """The gate's MACs in the call that just ended."""
        out, self._overhead = self._overhead, {}
        return out

    def block_pre(self, block: int, ctx: StepContext, streams: Streams, inputs: tuple):
        """Gate at block 0: skip the stack with input + R, or run it."""
        if block != 0:
            return None
        st = self.state.setdefault(ctx.branch, _BranchState())
        with torch.no_grad():
            m = self._gate_input(inputs)
        last = ctx.num_steps is not None and ctx.step >= ctx.num_steps - 1
        gate = False
        if st.prev_m is not None and st.residual is not None and ctx.step > 0 and not last and self.config.threshold > 0:
            st.acc += float(np.polyval(self.coefficients, rel_l1((m,), (st.prev_m,))))
            gate = st.acc < self.config.threshold
        skip = st.count.decide(self.config.limits, ctx.step, gate)
        if not skip:
            st.acc = 0.0
        st.prev_m = m
        if skip:
            return streams_add(streams, st.residual), self.n_blocks - 1
        st.in0 = streams
        return None

    def cache_bytes(self) -> int:
        """Bytes of the previous modulated input and the stack residual per branch."""
        return sum(tensor_bytes((s.prev_m, s.residual, s.in0)) for s in self.state.values())

    def reset(self) -> None:
        """Drop all state."""
        self.state.clear()


@dataclass
class _Recorder(BlockBackend):
    """Never skips; records (rel-L1 of modulated input, rel-L1 of transformer output) between steps."""

    family: str
    prev: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # branch -> (m, out)
    m: torch.Tensor | None = None
    pairs: list[tuple[float, float]] = field(default_factory=list)

    def begin_generation(self, ctx: StepContext) -> None:
        self.prev.clear()

    def block_pre(self, block: int, ctx: StepContext, streams: Streams, inputs: tuple):
        if block == 0:
            self.m = modulated_input(self.family, *inputs)
        return None

    def end_call(self, ctx: StepContext, output: Any) -> Any:
        out = output[0] if isinstance(output, tuple) else output.sample
        if ctx.branch in self.prev:
            pm, po = self.prev[ctx.branch]
            self.pairs.append((rel_l1((self.m,), (pm,)), rel_l1((out,), (po,))))
        self.prev[ctx.branch] = (self.m, out)
        return output

    def reset(self) -> None:
        self.prev.clear()


def calibrate_teacache(pipe: Any, calls: Sequence[dict], *, degree: int = 4, model: str = "") -> dict[str, Any]:
    """Fit TeaCache's polynomial on uncached runs of `calls` (pipeline kwargs); returns the profile dict."""
    from ..runtime import accelerate, space_of

    family = space_of(pipe.transformer).family
    check_family("TeaCache", family, FAMILIES)
    rec = _Recorder(family)
    handle = accelerate(pipe, rec)
    try:
        profiles.run_calls(pipe, calls)
    finally:
        handle.remove()
    x, y = np.array(rec.pairs).T
    if len(x) <= degree:
        raise profiles.ProfileError(f"only {len(x)} step pairs recorded; need more than {degree} to fit the polynomial")
    coeffs = np.polyfit(x, y, degree)
    steps = {c.get("num_inference_steps") for c in calls}
    return profiles.new_profile(**{
        "backend": "teacache", "family": family, "model": model, "fingerprint": profiles.model_fingerprint(pipe.transformer),
        "steps": steps.pop() if len(steps) == 1 else None, "prompts": len(calls), "degree": degree,
        "coefficients": [float(c) for c in coeffs],
        "fit": {"pairs": len(x), "rmse": float(np.sqrt(np.mean((np.polyval(coeffs, x) - y) ** 2)))},
    })
