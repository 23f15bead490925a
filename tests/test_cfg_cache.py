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



def _run(pipe, family, cfg):
    """(output, executed MACs) of one generation under `cfg`."""
    with dc.accelerate(pipe, cfg) as h:
        return _out(pipe, family), h.stats.macs()["executed"]


@pytest.mark.parametrize("family", ["flux", "wan"])
def test_cfg_cache_over_a_static_schedule(family):
    """`STATIC+cfg-cache`: compute-all under the gate = the gate alone, the gate at interval 1 = the schedule alone
    (bit-exact, same MACs); together the skipped uncond calls run no component, and remove() is exact."""
    pipe = dc.load_pipeline(f"random-tiny:{family}").pipe
    ref = _out(pipe, family)
    sp = dc.space_of(pipe.transformer)
    fora = dc.fora(sp, STEPS, 2)
    gate = _run(pipe, family, dc.CFGCacheConfig(interval=3, warmup=1))
    over_all = _run(pipe, family, dc.resolve_spec("all+cfg-cache:3:1", sp, STEPS).value)
    assert torch.equal(over_all[0], gate[0]) and over_all[1] == gate[1]
    plain = _run(pipe, family, fora)
    ungated = _run(pipe, family, dc.CFGCacheConfig(interval=1, schedule=fora))
    assert torch.equal(ungated[0], plain[0]) and ungated[1] == plain[1]
    spec = dc.resolve_spec("fora:2+cfg-cache:3:1", sp, STEPS)
    assert spec.name == "fora-2+cfg-cache-3-w1"
    with dc.accelerate(pipe, spec.value) as h:
        out = _out(pipe, family)
        per_step = h.stats.computed.sum((1, 2)).tolist()
        executed = h.stats.macs()["executed"]
    cells = int(sp.applicable.sum())
    # FORA-2 is active at steps 0, 2, 4, 6, 8; the uncond call runs at active step 0 (warm-up 1), 1 and 4 (every
    # 3rd after the warm-up, and the last), so it is reconstructed at steps 4 and 6
    assert per_step == [(cells if k % 2 == 0 else 0) * (1 if k in (4, 6) else 2) for k in range(STEPS)]
    assert executed < min(plain[1], gate[1]) and torch.isfinite(out).all() and not torch.equal(out, plain[0])
    assert torch.equal(_out(pipe, family), ref)  # removed


def test_cfg_cache_over_schedule_errors():
    """Bad combinations are refused by name; compile is refused; batched CFG is refused as for the gate alone."""
    pipe = dc.load_pipeline("random-tiny:flux").pipe
    sp = dc.space_of(pipe.transformer)
    with pytest.raises(dc.ScheduleError, match="not a static schedule"):
        dc.resolve_spec("teacache+cfg-cache", sp, STEPS)
    with pytest.raises(dc.ScheduleError, match=r"\+ joins a static spec and cfg-cache"):
        dc.resolve_spec("fora:3+teacache", sp, STEPS)
    with dc.accelerate(pipe, dc.resolve_spec("fora:2+cfg-cache", sp, STEPS).value) as h:
        with pytest.raises(RuntimeError, match="compile"):
            h.compile_blocks()
    pix = dc.load_pipeline("random-tiny:pixart").pipe
    cfg = dc.resolve_spec("fora:2+cfg-cache", dc.space_of(pix.transformer), STEPS).value
    with pytest.raises(ValueError, match="needs separate cond / uncond transformer calls"):
        with dc.accelerate(pix, cfg):
            _out(pix, "pixart")
