"""An adapter inferred from the module tree, for a diffusers transformer no registered adapter covers.

* **Blocks**: every `nn.ModuleList` attribute of the transformer whose name ends in ``blocks`` and whose
  items are all of one class (``transformer_blocks``, ``single_transformer_blocks``, ``blocks``, ...), in
  registration order; ids ``0..`` for the first list, ``<attr>_0..`` for later ones.
* **Components**: a block's direct children that are attention modules (they project queries: ``to_q``) or
  feed-forwards (``ff``/``mlp``-named children, or a class name with FeedForward, Mlp, MLP or GLUMBConv).
* **Block outputs**: read from the block's ``forward`` source: every ``return`` must give
  ``hidden_states`` alone or a tuple of stream arguments of the forward (e.g. ``encoder_hidden_states,
  hidden_states``).

Anything it cannot identify raises one TypeError naming it, with the way to register an adapter instead.
The family is ``generic-<ClassName>``; MACs are counted from the real calls (no example inputs).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any

from torch import nn

from .base import Adapter, BlockGroup, InputSpec

FEEDFORWARD_NAMES = ("FeedForward", "Mlp", "MLP", "GLUMBConv")


def _is_component(name: str, module: nn.Module) -> bool:
    cls = type(module).__name__
    return hasattr(module, "to_q") or name in ("ff", "mlp", "ff_context") or any(k in cls for k in FEEDFORWARD_NAMES)


def _block_lists(transformer: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    return [(name, m) for name, m in transformer.named_children()
            if isinstance(m, nn.ModuleList) and name.endswith("blocks") and len(m) > 0
            and len({type(b) for b in m}) == 1]


def _returns(block: nn.Module) -> tuple[str, ...] | None:
    """The stream names the block's forward returns (one form for every return), or None if unclear."""
    try:
        src = textwrap.dedent(inspect.getsource(type(block).forward))
    except (OSError, TypeError):
        return None
    params = set(list(inspect.signature(type(block).forward).parameters)[1:])
    forms = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Return) and node.value is not None:
            elts = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            if not all(isinstance(e, ast.Name) and e.id in params for e in elts):
                return None
            forms.add(tuple(e.id for e in elts))
    return forms.pop() if len(forms) == 1 and "hidden_states" in next(iter(forms)) else None


def _no_example_inputs(config: Any, spec: InputSpec) -> dict:
    raise TypeError("an inferred (generic) adapter has no example inputs: count MACs from a real call "
                    "(`dc.accelerate(pipe, ...)` then `handle.stats`), or register an adapter with example_inputs")


def _fail(cls: str, what: str) -> TypeError:
    from . import _REGISTER_HELP, _REGISTRY

    supported = ", ".join(n for a in _REGISTRY.values() for n in a.class_names)
    return TypeError(f"dit-cache has no adapter for {cls} and could not infer one: {what}. Supported transformer "
                     f"classes: {supported}.\n{_REGISTER_HELP}")


def infer_adapter(transformer: nn.Module) -> Adapter:
    """The adapter of `transformer` read from its module tree (see the module docstring); TypeError if unclear."""
    cls = type(transformer).__name__
    lists = _block_lists(transformer)
    if not lists:
        raise _fail(cls, "no ModuleList attribute named *blocks holding blocks of one class")
    groups, outputs = [], None
    for i, (attr, blocks) in enumerate(lists):
        comps = {n: n for n, m in blocks[0].named_children() if _is_component(n, m)}
        if not comps:
            raise _fail(cls, f"no attention (to_q) or feed-forward child in {attr}[0] ({type(blocks[0]).__name__})")
        ret = _returns(blocks[0])
        if ret is None or (outputs is not None and ret != outputs):
            raise _fail(cls, f"cannot tell which streams {type(blocks[0]).__name__}.forward returns (each return must "
                        "name stream arguments, the same way in every block list)")
        outputs = ret
        groups.append(BlockGroup(attr, comps, id_prefix="" if i == 0 else f"{attr}_"))
    if "timestep" not in inspect.signature(type(transformer).forward).parameters:
        raise _fail(cls, "its forward has no `timestep` argument to track denoising steps by")
    return Adapter(family=f"generic-{cls}", class_names=(cls,), groups=tuple(groups), example_inputs=_no_example_inputs,
                   block_outputs=outputs, notes="inferred from the module tree (dit_cache.adapters.generic)")
