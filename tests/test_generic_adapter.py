"""A transformer class outside the five families (Sana) gets an adapter inferred from its module tree: block-level
backends bit-exact at never-skip settings, real skipping otherwise, static schedules, `remove()` exact; classes it
cannot read are refused with what it could not identify."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dit_cache as dc
from dit_cache.adapters import get_adapter
from dit_cache.backends.first_block import FirstBlockCacheConfig
from dit_cache.backends.teacache import TeaCacheConfig

STEPS = 6


@pytest.fixture(scope="module")
def sana():
    from diffusers import SanaTransformer2DModel

    torch.manual_seed(0)
    return SanaTransformer2DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
                                  num_layers=3, num_cross_attention_heads=2, cross_attention_head_dim=8,
                                  cross_attention_dim=16, caption_channels=16, mlp_ratio=2.0, sample_size=8,
                                  patch_size=1).eval()


def _denoise(model: nn.Module) -> torch.Tensor:
    """A small Euler-like loop calling the transformer with decreasing timesteps (CFG batch 2)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=g)
    text = torch.randn(2, 5, 16, generator=g)
    outs = []
    with torch.no_grad():
        for t in torch.linspace(999, 50, STEPS):
            v = model(x, encoder_hidden_states=text, timestep=t.expand(2), return_dict=False)[0]
            x = x - 0.1 * v
            outs.append(x)
    return torch.stack(outs)


def test_inferred_adapter_reads_blocks_and_components(sana):
    a = get_adapter(sana)
    assert a.family == "generic-SanaTransformer2DModel" and a.block_outputs == ("hidden_states",)
    assert [g.attr for g in a.groups] == ["transformer_blocks"] and set(a.components) == {"attn1", "attn2", "ff"}
    assert dc.space_of(sana).block_ids == ("0", "1", "2") and get_adapter(a.family) is a


@pytest.mark.parametrize("config", [FirstBlockCacheConfig(threshold=0.0), TeaCacheConfig(threshold=0.0)],
                         ids=["first-block", "teacache"])
def test_block_backends_never_skipping_are_bit_exact(sana, config):
    ref = _denoise(sana)
    params = [p.clone() for p in sana.parameters()]
    with dc.accelerate(sana, config) as h:
        out = _denoise(sana)
        assert h.stats.skipped == 0 and h.stats.calls == STEPS
    assert torch.equal(out, ref)
    assert torch.equal(_denoise(sana), ref)  # removed: no trace
    assert all(torch.equal(p, q) for p, q in zip(sana.parameters(), params))
    assert not any(hasattr(m, "_diffusers_hook") and m._diffusers_hook.hooks for m in sana.modules())


def test_skipping_and_static_schedules_run(sana):
    ref = _denoise(sana)
    with dc.accelerate(sana, FirstBlockCacheConfig(threshold=10.0)) as h:
        out = _denoise(sana)
        assert h.stats.skipped > 0
    assert not torch.equal(out, ref) and torch.isfinite(out).all()
    sched = dc.fora(dc.space_of(sana), STEPS, 2)
    with dc.accelerate(sana, sched) as h:
        out = _denoise(sana)
        assert h.stats.compute_fraction() == pytest.approx(sched.compute_fraction())
        assert h.stats.macs()["speedup"] > 1.3
    assert not torch.equal(out, ref)


def test_unreadable_transformers_are_named():
    class NoBlocks(nn.Module):
        def forward(self, hidden_states, timestep):
            return hidden_states

    with pytest.raises(TypeError, match=r"no adapter for NoBlocks and could not infer one: no ModuleList"):
        get_adapter(NoBlocks())

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ff = nn.Linear(4, 4)

        def forward(self, hidden_states):
            return self.ff(hidden_states) + hidden_states  # not a stream name: unclear what it returns

    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([Block()])

        def forward(self, hidden_states, timestep):
            return self.blocks[0](hidden_states)

    with pytest.raises(TypeError, match=r"(?s)cannot tell which streams Block.forward returns.*register_adapter"):
        get_adapter(Odd())
