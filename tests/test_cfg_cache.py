"""CFG-branch caching on pipelines with separate cond / uncond calls (FLUX true CFG, Wan): never-skip settings
bit-exact, the decision pattern and the counted work, remove() exact, batched-CFG pipelines refused by name."""

from __future__ import annotations

import pytest
import torch

import dit_cache as dc
from dit_cache.zoo.tiny_random import tiny_call_kwargs

STEPS = 10


def _out(pipe, family):
    res = pipe(**tiny_call_kwargs(family, num_inference_steps=STEPS))
    return res.frames if family == "wan" else res.images


@pytest.mark.parametrize("family", ["flux", "wan"])
def test_cfg_cache_on_separate_cfg_calls(family):
    pipe = dc.load_pipeline(f"random-tiny:{family}").pipe
    ref = _out(pipe, family)
    with dc.accelerate(pipe, dc.CFGCacheConfig(interval=1)) as h:
        assert torch.equal(_out(pipe, family), ref) and h.stats.skipped == 0  # every step full
    with dc.accelerate(pipe, dc.resolve_spec("cfg-cache:3:1").value) as h:
        out = _out(pipe, family)
        pattern = "".join("S" if d["skipped"] else "C" for d in h.decisions)
        cells = h.space.applicable.sum()
        speed = h.stats.macs()["speedup"]
    # per step: cond call, then uncond call; full steps 0 (warm-up), 1, 4, 7 (every 3rd) and 9 (last)
    assert pattern == "".join("CC" if k in (0, 1, 4, 7, 9) else "CS" for k in range(STEPS))
    assert h.stats.skipped == pattern.count("S") * cells and speed > 1.15  # 5 of 20 calls skip their blocks
    assert not torch.equal(out, ref) and torch.isfinite(out).all()
    assert torch.equal(_out(pipe, family), ref)  # removed


def test_batched_cfg_is_refused_and_settings_checked():
    pipe = dc.load_pipeline("random-tiny:pixart").pipe
    with pytest.raises(ValueError, match="needs separate cond / uncond transformer calls"):
        with dc.accelerate(pipe, dc.CFGCacheConfig()):
            _out(pipe, "pixart")
    with pytest.raises(ValueError, match="interval >= 1"):
        dc.CFGCacheConfig(interval=0)
    assert dc.resolve_spec("cfg-cache:3:1").name == "cfg-cache-3-w1"
