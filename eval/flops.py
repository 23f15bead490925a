"""One compute instrument for every caching library: the MACs a transformer really executes.

Every matmul, convolution and attention kernel that runs inside the transformer's forward is counted with
torch's own FLOP formulas (`torch.utils.flop_counter`), whoever's hook decided to run it, so dit-cache,
diffusers' cache hooks and cache-dit are measured alike. Two differences from `FlopCounterMode`: the
attention kernels it has no formula for (the CPU flash kernel, the overrideable fused kernel) are added with
torch's SDPA formula (QKᵀ and A·V, as `dit_cache.macs` counts them); and ops run as they are, neither
decomposed nor attributed to modules (FlopCounterMode does both and makes a generation ~4× slower), counting
only between the transformer's forward pre- and post-hook. MACs = FLOPs / 2.

    with TransformerMacs(pipe.transformer) as counter:
        pipe(prompt)
    counter.macs
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

aten = torch.ops.aten
MISSED_ATTENTION = tuple(getattr(aten, name) for name in (
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable")
    if hasattr(aten, name))


def _sdpa_flops(query_shape, key_shape, value_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    """FLOPs of one attention call, (B, H, S, D) shapes: 2 matmuls."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


class _Count(TorchDispatchMode):
    """Runs every op as is; adds the FLOPs of those torch has a formula for."""

    def __init__(self, registry: dict) -> None:
        super().__init__()
        self.registry, self.flops = registry, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


class TransformerMacs:
    """Context manager: MACs executed by `transformer`'s forward inside it (every call, every hook)."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.transformer = transformer
        self.name = type(transformer).__name__
        self.macs, self.calls = 0, 0
        registry = FlopCounterMode(display=False, custom_mapping={op: _sdpa_flops for op in MISSED_ATTENTION})
        self._registry = registry.flop_registry  # torch's formulas, shape-wrapped, plus the missed kernels
        self._mode: _Count | None = None
        self._hooks: list = []
        self._flops = 0

    def _start(self, *_: Any) -> None:
        if self._mode is None:  # a nested call (the transformer inside itself) is already counted
            self._mode = _Count(self._registry)
            self._mode.__enter__()

    def _stop(self, *_: Any) -> None:
        if self._mode is not None:
            mode, self._mode = self._mode, None
            mode.__exit__(None, None, None)
            self._flops += mode.flops
            self.calls += 1

    def __enter__(self) -> TransformerMacs:
        self._flops, self.calls = 0, 0
        self._hooks = [self.transformer.register_forward_pre_hook(self._start),
                       self.transformer.register_forward_hook(self._stop, always_call=True)]
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop()
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if exc[0] is None and self.calls == 0:
            raise RuntimeError(f"{self.name} never ran inside TransformerMacs")
        self.macs = self._flops // 2
