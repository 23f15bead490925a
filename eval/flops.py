"""One compute instrument for every caching library: the MACs a transformer really executes.

torch's ``FlopCounterMode`` counts every matmul and convolution that runs, whoever's hook decided to run it,
so dit-cache, diffusers' cache hooks and cache-dit are measured alike. It misses the attention kernels that
have no flop formula in torch (the CPU flash kernel, the overrideable fused kernel); they are added here with
torch's own SDPA formula (QKᵀ and A·V, as `dit_cache.macs` counts them). MACs = FLOPs / 2.

    with TransformerMacs(pipe.transformer) as counter:
        pipe(prompt)
    counter.macs
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

aten = torch.ops.aten
MISSED_ATTENTION = tuple(getattr(aten, name) for name in (
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable")
    if hasattr(aten, name))


def _sdpa_flops(query_shape, key_shape, value_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    """FLOPs of one attention call, (B, H, S, D) shapes: 2 matmuls."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


class TransformerMacs:
    """Context manager: MACs executed by `transformer` inside it (every call, every hook)."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.name = type(transformer).__name__
        self.macs = 0
        self._counter: FlopCounterMode | None = None

    def __enter__(self) -> TransformerMacs:
        self._counter = FlopCounterMode(display=False, custom_mapping={op: _sdpa_flops for op in MISSED_ATTENTION})
        self._counter.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        counter, self._counter = self._counter, None
        counter.__exit__(*exc)
        counts = counter.get_flop_counts()
        if exc[0] is None and self.name not in counts:
            raise RuntimeError(f"{self.name} never ran inside TransformerMacs (counted modules: {sorted(counts)[:8]})")
        self.macs = int(sum(counts.get(self.name, {}).values())) // 2
