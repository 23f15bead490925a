"""benchmarks/peers.py drives the peers' hooks as their users would: checked on a tiny random FLUX."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from dit_cache.zoo.tiny_random import build_tiny_pipeline, tiny_call_kwargs
from eval.flops import TransformerMacs

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "benchmarks" / "peers.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_peers"] = mod  # its @dataclass looks its module up there
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("bench_peers", None)
    sys.path.remove(str(ROOT / "benchmarks"))


def test_pyramid_attention_broadcast_sees_flux_timesteps_on_its_own_scale(peers) -> None:
    """FLUX's transformer is called with t / 1000: the timestep callback must scale it back, or PAB's
    (100, 900) window is never entered and it skips nothing."""
    pipe = build_tiny_pipeline("flux")
    pab = next(m for m in peers.diffusers_methods(STEPS, None, "flux") if m.name == "PyramidAttentionBroadcast")
    with TransformerMacs(pipe.transformer) as full, torch.no_grad():
        pipe(**tiny_call_kwargs("flux", STEPS, 0))
    on = pab.enable(pipe)
    try:
        with TransformerMacs(pipe.transformer) as counted, torch.no_grad():
            pipe(**tiny_call_kwargs("flux", STEPS, 0))
    finally:
        on.remove()
    assert 0 < counted.macs < full.macs
