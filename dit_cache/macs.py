"""Exact MAC accounting per component per step, from a model config alone (no weights).

The transformer is instantiated on the ``meta`` device and run once under
``torch.utils.flop_counter.FlopCounterMode`` with inputs of the requested shape; the per-module
counts are attributed to (block, component) cells through the adapter. MACs = FLOPs / 2.

Two conventions:

* ``full``: every linear and convolution MAC plus the attention matmuls (QKᵀ and A·V).
* ``ecad``: linear and convolution layers only, as ECAD's calflops figures count them
  (the attention score/value matmuls are left out). ECAD measured at CFG batch 2.

Cost of one transformer call with compute mask m [blocks, components]::

    macs(m) = outside + Σ_b block_other[b] + Σ_{b,c} m[b, c] · component[b, c]

where ``outside`` is patch/text/time embedding and the final layer, ``block_other`` the MACs inside a
block that no component covers (e.g. DiT's per-block adaLN-Zero linear).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode

from .adapters import Adapter, InputSpec, get_adapter

CONVENTIONS = ("full", "ecad")
_LINEAR_OPS = {"aten.mm", "aten.addmm", "aten.convolution", "aten._convolution"}


@dataclass(frozen=True)
class StepCost:
    """MACs of one transformer call, split into components, other in-block work and outside-block work."""

    component: np.ndarray  # int64 [blocks, components], 0 where a block lacks the component
    block_other: np.ndarray  # int64 [blocks]
    outside: int
    convention: str

    @property
    def full(self) -> int:
        """MACs of a call that computes everything."""
        return int(self.outside + self.block_other.sum() + self.component.sum())

    def call_macs(self, compute: np.ndarray) -> int:
        """MACs of a call with compute mask [blocks, components]."""
        return int(self.outside + self.block_other.sum() + (self.component * compute).sum())


def _macs_by_module(model: nn.Module, args: tuple, kwargs: dict, convention: str) -> dict[str, int]:
    """Run `model` once under FlopCounterMode; MACs per module path (relative to the model, '' = whole)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown MAC convention {convention!r}; choose one of {CONVENTIONS}")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*args, **kwargs)
    root = type(model).__name__
    out: dict[str, int] = {}
    for name, ops in counter.get_flop_counts().items():
        if name != root and not name.startswith(root + "."):
            continue
        out[name[len(root) + 1 :] if name != root else ""] = _macs_of(ops, convention)
    return out


def _macs_of(ops: Mapping[Any, int], convention: str) -> int:
    """MACs of one FlopCounterMode op table under `convention` (FLOPs / 2)."""
    return int(sum(v for op, v in ops.items() if convention == "full" or str(op) in _LINEAR_OPS)) // 2


def counted_macs(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, int]]:
    """``fn(*args, **kwargs)`` run under FlopCounterMode: (its result, MACs per convention)."""
    counter = FlopCounterMode(display=False)
    with counter:
        out = fn(*args, **kwargs)
    ops = counter.get_flop_counts().get("Global", {})
    return out, {c: _macs_of(ops, c) for c in CONVENTIONS}


def step_cost(model: nn.Module, args: tuple, kwargs: dict, *, adapter: Adapter | None = None,
              convention: str = "full") -> StepCost:
    """Cost table of one call of `model` (ideally a meta-device model) with these inputs."""
    adapter = adapter or get_adapter(model)
    by_module = _macs_by_module(model, args, kwargs, convention)
    paths = adapter.block_paths(model)
    comp = np.zeros((len(paths), len(adapter.components)), dtype=np.int64)
    for site in adapter.sites(model):
        comp[site.block, site.component] = by_module.get(site.path, 0)
    blocks = np.array([by_module.get(p, 0) for p in paths], dtype=np.int64)
    total = by_module.get("", 0)
    return StepCost(comp, blocks - comp.sum(1), int(total - blocks.sum()), convention)


def meta_like(tree: Any) -> Any:
    """Replace every tensor by an empty meta tensor of the same shape (floats as float32: MACs do not
    depend on the dtype, and the meta model is float32)."""

    def conv(x: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            return x
        return torch.empty(x.shape, dtype=torch.float32 if x.is_floating_point() else x.dtype, device="meta")

    return tree_map(conv, tree)


def meta_model_of(model: nn.Module) -> nn.Module:
    """A weightless copy of `model` (same class and config) on the meta device."""
    config = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    with torch.device("meta"):
        return type(model).from_config(config)


def step_cost_from_config(family: str, config: Mapping[str, Any], spec: InputSpec,
                          convention: str = "full") -> StepCost:
    """Cost table for a family's transformer config at the shape `spec` (no weights needed)."""
    adapter = get_adapter(family)
    model = adapter.meta_model(config)
    kwargs = adapter.example_inputs(model.config, spec)
    return step_cost(model, (), kwargs, adapter=adapter, convention=convention)


def schedule_macs(compute: np.ndarray, cost: StepCost) -> np.ndarray:
    """MACs per step (int64 [steps]) for a compute array [steps, blocks, components]."""
    per_cell = (compute.astype(np.int64) * cost.component[None]).sum((1, 2))
    return per_cell + cost.outside + int(cost.block_other.sum())


def load_transformer_config(source: str | Path, family: str | None = None) -> dict[str, Any]:
    """A transformer config from a JSON file, a local model folder, or a Hugging Face hub id."""
    path = Path(source)
    if path.is_file():
        return json.loads(path.read_text())
    if path.is_dir():
        for cand in (path / "config.json", path / "transformer" / "config.json"):
            if cand.is_file():
                return json.loads(cand.read_text())
        raise FileNotFoundError(f"{path} has neither config.json nor transformer/config.json")
    if family is None:
        raise ValueError(f"{source!r} is not a file or folder; to read a hub id also give the family")
    import diffusers

    cls = getattr(diffusers, get_adapter(family).class_names[0])
    try:
        return dict(cls.load_config(str(source), subfolder="transformer"))
    except Exception as e:  # the hub client raises many types offline
        raise RuntimeError(
            f"could not read the transformer config of {source!r} from the Hugging Face Hub ({type(e).__name__}: {e}). "
            f"Offline? Fetch it where the hub is reachable (`hf download {source} transformer/config.json`) "
            "and pass the file path instead."
        ) from None
