"""Skip limits on every gated backend: warm-up, max consecutive / total skips, forced refresh — exact decision
patterns (logged decisions = counted block evaluations), per CFG branch, defaults unchanged."""

from __future__ import annotations

import pytest
import torch

import dit_cache as dc
from dit_cache.zoo.tiny_random import tiny_call_kwargs

STEPS = 10
ALWAYS = 1e9  # a threshold at which every gate says "skip" once it can


@pytest.fixture(scope="module")
def pixart():
    return dc.load_pipeline("random-tiny:pixart").pipe


def _pattern(pipe, family: str, config) -> tuple[str, dc.CacheHandle]:
    """'C'/'S' per transformer call (compute / skip) of one generation; skipped component evaluations and
    components per block, as the handle counted them."""
    with dc.accelerate(pipe, config) as h:
        pipe(**tiny_call_kwargs(family, num_inference_steps=STEPS))
        dec = h.decisions
        skipped = h.stats.skipped  # component evaluations skipped
        cells = h.space.applicable.sum(1)  # components per block
    return "".join("S" if d["skipped"] else "C" for d in dec), (skipped, cells)


@pytest.mark.parametrize("limits,expect", [
    (dc.SkipLimits(), "CSSSSSSSSS"),
    (dc.SkipLimits(max_consecutive=2), "CSSCSSCSSC"),
    (dc.SkipLimits(warmup=3), "CCCSSSSSSS"),
    (dc.SkipLimits(max_total=3), "CSSSCCCCCC"),
    (dc.SkipLimits(refresh_every=4), "CSSSCSSSCS"),
    (dc.SkipLimits(refresh_steps=(2, 7), max_consecutive=3), "CSCSSSCCSS"),
])
def test_first_block_limits(pixart, limits, expect):
    pattern, (skipped, cells) = _pattern(pixart, "pixart", dc.FirstBlockCacheConfig(threshold=ALWAYS, limits=limits))
    assert pattern == expect
    assert skipped == pattern.count("S") * cells[1:].sum()  # block 0 always runs: counts = logged decisions


def test_teacache_and_cg_taylor_limits(pixart):
    base = dc.TeaCacheConfig(threshold=ALWAYS)
    assert _pattern(pixart, "pixart", base)[0] == "CSSSSSSSSC"  # first and last step always run
    tc = dc.TeaCacheConfig(threshold=ALWAYS, limits=dc.SkipLimits(max_consecutive=3, refresh_steps=(5,)))
    pattern, (skipped, cells) = _pattern(pixart, "pixart", tc)
    assert pattern == "CSSSCCSSSC" and skipped == pattern.count("S") * cells.sum()  # the whole stack is skipped
    cg = dc.CGTaylorConfig(threshold=ALWAYS, warmup=2, limits=dc.SkipLimits(max_total=4, warmup=4))
    assert _pattern(pixart, "pixart", cg)[0] == "CCCCSSSSCC"  # both warm-ups apply: max(2, 4) steps


def test_limits_count_per_cfg_branch():
    """FLUX true CFG: two calls per step, each branch with its own counters (same pattern twice)."""
    pipe = dc.load_pipeline("random-tiny:flux").pipe
    pattern, _ = _pattern(pipe, "flux", dc.FirstBlockCacheConfig(threshold=ALWAYS,
                                                                 limits=dc.SkipLimits(max_consecutive=2)))
    assert pattern == "".join(c * 2 for c in "CSSCSSCSSC")


def test_default_limits_are_bit_identical_and_bad_limits_are_named(pixart):
    kw = tiny_call_kwargs("pixart", num_inference_steps=STEPS)
    with dc.accelerate(pixart, dc.FirstBlockCacheConfig(threshold=0.3)):
        a = pixart(**kw).images
    with dc.accelerate(pixart, dc.FirstBlockCacheConfig(threshold=0.3, limits=dc.SkipLimits(refresh_steps=()))):
        b = pixart(**{**kw, "generator": torch.Generator("cpu").manual_seed(0)}).images
    assert torch.equal(a, b)
    for bad, field in ((dict(warmup=-1), "warmup"), (dict(max_consecutive=True), "max_consecutive"),
                       (dict(refresh_every=0), "refresh_every"), (dict(refresh_steps=(1, -2)), "refresh_steps"),
                       (dict(max_total=1.5), "max_total")):
        with pytest.raises(ValueError, match=rf"SkipLimits\.{field}"):
            dc.SkipLimits(**bad)
    with pytest.raises(ValueError, match=r"FirstBlockCacheConfig\.limits must be a SkipLimits"):
        dc.FirstBlockCacheConfig(limits={"warmup": 2})
