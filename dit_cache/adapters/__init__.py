"""Adapter registry: look up the adapter for a transformer instance or a family name."""

from __future__ import annotations

from torch import nn

from . import dit, flux, pixart, sd3, wan
from .base import Adapter, BlockGroup, InputSpec, Site

__all__ = ["Adapter", "BlockGroup", "InputSpec", "Site", "families", "get_adapter", "register_adapter"]

_REGISTRY: dict[str, Adapter] = {}
_INFERRED: dict[str, Adapter] = {}  # generic adapters inferred so far, by family (generic-<ClassName>)

_REGISTER_HELP = """\
To support another transformer class, register an adapter that names its block lists and components:

    from dit_cache.adapters import Adapter, BlockGroup, register_adapter
    register_adapter(Adapter(
        family="myfamily",
        class_names=("MyTransformer2DModel",),
        groups=(BlockGroup("transformer_blocks", {"attn1": "attn1", "ff": "ff"}),),
        example_inputs=lambda config, spec: {...},  # meta tensors for one forward, used for MAC counting
    ))"""


def register_adapter(adapter: Adapter, *, overwrite: bool = False) -> Adapter:
    """Register `adapter` for its family and transformer class names; returns it."""
    if not isinstance(adapter, Adapter):
        raise TypeError(f"register_adapter expects an Adapter, got {type(adapter).__name__}")
    if not adapter.groups or not all(g.components for g in adapter.groups):
        raise ValueError(f"adapter {adapter.family!r} must declare at least one block group with components")
    if adapter.family in _REGISTRY and not overwrite:
        raise ValueError(f"an adapter for family {adapter.family!r} exists; pass overwrite=True to replace it")
    _REGISTRY[adapter.family] = adapter
    return adapter


def unregister_adapter(family: str) -> None:
    """Remove a registered family (mainly for tests)."""
    _REGISTRY.pop(family, None)


def families() -> tuple[str, ...]:
    """Registered family names."""
    return tuple(_REGISTRY)


def get_adapter(model_or_family: nn.Module | str) -> Adapter:
    """Adapter for a transformer instance (matched by class name, including base classes; else inferred from its
    module tree, `adapters.generic`) or a family name."""
    if isinstance(model_or_family, str):
        found = _REGISTRY.get(model_or_family) or _INFERRED.get(model_or_family)
        if found is None:
            raise ValueError(f"unknown model family {model_or_family!r}; known families: {', '.join(_REGISTRY)}")
        return found
    names = [c.__name__ for c in type(model_or_family).__mro__]
    for adapter in _REGISTRY.values():
        if any(n in adapter.class_names for n in names):
            return adapter
    known = _INFERRED.get(f"generic-{type(model_or_family).__name__}")
    if known is not None:
        return known
    from .generic import infer_adapter

    adapter = infer_adapter(model_or_family)  # TypeError naming what it could not identify
    _INFERRED[adapter.family] = adapter
    return adapter


for _m in (pixart, dit, flux, sd3, wan):
    register_adapter(_m.ADAPTER)
