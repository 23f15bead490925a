"""benchmarks/peers.py drives the peers' hooks as their users would: checked on a tiny random FLUX."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import dit_cache as dc
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


def test_our_rows_include_static_schedules_under_cfg_branch_caching_and_the_instrument_agrees(peers) -> None:
    """With separate CFG calls our rows add FORA-4 and the shipped learned schedules >= 2.5x under CFG-branch
    caching (never without them), and FORA-5; on such a row the one instrument counts exactly our MACs."""
    rows = peers.our_specs(20, 12, "tiny-flux", separate_cfg=True)
    settings = {s for _, s, _ in rows}
    assert {"fora:5", "fora:4+cfg-cache:2:2", "learned-3.81x+cfg-cache:2:2", "learned-3.16x+cfg-cache:2:2"} <= settings
    assert "learned-2.20x+cfg-cache:2:2" not in settings  # below 2.5x
    assert not any("+cfg-cache" in s for _, s, _ in peers.our_specs(20, 12, "tiny-flux", separate_cfg=False))
    pipe = build_tiny_pipeline("flux")
    space = dc.space_of(pipe.transformer)
    value = dc.resolve_spec("fora:2" + peers.COMBINED.replace(":2:2", ":2:1"), space, 10).value
    method = peers.Method("dit-cache", "fora+cfg-cache", "fora:2+cfg-cache:2:1", lambda p: dc.accelerate(p, value))
    base = {k: v for k, v in tiny_call_kwargs("flux", 10, 0).items() if k not in ("prompt", "generator")}
    got = peers.generate(pipe, base, ["a red circle"], [0], method)  # stops the run if the counts differ
    full = peers.generate(pipe, base, ["a red circle"], [0], None)
    assert got["macs"] < full["macs"]
