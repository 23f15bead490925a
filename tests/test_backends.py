"""Dynamic and forecasting backends on tiny random pipelines of all five families.

Every backend: a never-skip setting is bit-identical to no hooks; evaluations counted match the
backend's logged decisions; the compute fraction falls as the threshold / interval rises; state is
per CFG branch and per instance; remove() restores bit-identical outputs; cache bytes match the
expected tensor count.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import dit_cache as dc
from dit_cache.backends.cg_taylor import CGTaylorConfig
from dit_cache.backends.delta_dit import DeltaDiTConfig
from dit_cache.backends.erta import ERTACacheConfig
from dit_cache.backends.erta_profile import profile_erta
from dit_cache.backends.first_block import FirstBlockCacheConfig
from dit_cache.backends.taylorseer import TaylorSeerConfig
from dit_cache.backends.teacache import TeaCacheConfig
from dit_cache.zoo.tiny_random import build_tiny_pipeline, tiny_call_kwargs

FAMILIES = ("pixart", "dit", "flux", "sd3", "wan")
BACKENDS = ("taylorseer", "delta_dit", "first_block", "teacache", "cg_taylor", "erta")
STEPS = 8
SEPARATE_CFG = ("flux", "wan")  # cond and uncond are separate transformer calls

_PIPES: dict[str, object] = {}
_REFS: dict[str, torch.Tensor] = {}
_PROFILES: dict[str, dict] = {}


def pipe_of(family: str):
    """Cached tiny pipeline per family."""
    if family not in _PIPES:
        _PIPES[family] = build_tiny_pipeline(family)
    return _PIPES[family]


def run(pipe, family: str, seed: int = 0) -> torch.Tensor:
    """Output of one generation (latents, or images for dit)."""
    out = pipe(**tiny_call_kwargs(family, STEPS, seed))
    return torch.as_tensor(out.frames if hasattr(out, "frames") else out.images)


def ref(family: str) -> torch.Tensor:
    """Uncached output, seed 0."""
    if family not in _REFS:
        _REFS[family] = run(pipe_of(family), family)
    return _REFS[family]


def erta_profile(family: str, reuse: int | None = None) -> dict:
    """An ERTACache profile with 3 reuse steps (cut to the first `reuse` of them)."""
    if family not in _PROFILES:
        calls = [tiny_call_kwargs(family, STEPS, seed) for seed in (10, 11)]
        prof = profile_erta(pipe_of(family), calls, num_reuse=3, criterion="residual", fit_corrections=False)
        prof["phi"] = [0.99 if i in prof["reuse_steps"] else 1.0 for i in range(STEPS)]  # exercise φ scaling
        _PROFILES[family] = prof
    prof = dict(_PROFILES[family])
    if reuse is not None:
        prof["reuse_steps"] = prof["reuse_steps"][:reuse]
    return prof


def sweep(backend: str, family: str) -> list:
    """Configs from never-skip to aggressive."""
    if backend == "taylorseer":
        return [TaylorSeerConfig(interval=n, warmup=2) for n in (1, 2, 4)]
    if backend == "delta_dit":
        return [DeltaDiTConfig(interval=n, boundary_step=4) for n in (1, 2, 4)]
    if backend == "first_block":
        return [FirstBlockCacheConfig(t) for t in (0.0, 0.05, 100.0)]
    if backend == "teacache":
        return [TeaCacheConfig(t) for t in (0.0, 0.05, 100.0)]
    if backend == "cg_taylor":
        return [CGTaylorConfig(t, warmup=2) for t in (0.0, 0.05, 100.0)]
    return [ERTACacheConfig(erta_profile(family, n)) for n in (0, 1, 3)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_never_skip_is_bit_identical(family, backend):
    pipe = pipe_of(family)
    with dc.accelerate(pipe, sweep(backend, family)[0]) as h:
        out = run(pipe, family)
        assert h.stats.skipped == 0 and h.stats.evaluations > 0
    assert torch.equal(out, ref(family))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_compute_fraction_falls_and_remove_restores(family, backend):
    pipe = pipe_of(family)
    fractions, speedups = [], []
    for cfg in sweep(backend, family):
        h = dc.accelerate(pipe, cfg)
        out = run(pipe, family)
        fractions.append(h.stats.compute_fraction())
        speedups.append(h.stats.macs()["speedup"])
        h.remove()
    assert fractions[0] == 1.0 and fractions[-1] < 1.0, fractions
    assert all(a >= b for a, b in itertools.pairwise(fractions)), fractions
    assert speedups[-1] > 1.0
    assert not torch.equal(out, ref(family))  # the aggressive setting really changed the output
    assert torch.equal(run(pipe, family), ref(family))  # ... and remove() restored the model


def _computed_blocks(backend: str, b, skipped: bool, branch: int) -> set[int]:
    """Blocks a call runs given the backend's logged decision."""
    n = b.n_blocks
    if not skipped:
        return set(range(n))
    if backend == "first_block":
        return {0}
    if backend == "cg_taylor":
        return {0} if branch == 0 else set()
    if backend == "delta_dit":
        raise AssertionError("delta_dit depends on the step: see the test")
    return set()


def _range(b, step: int) -> range:
    lo, hi = b.block_range(step)
    return range(lo, hi + 1)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "taylorseer"])
@pytest.mark.parametrize("family", FAMILIES)
def test_counted_evaluations_match_decisions(family, backend):
    pipe = pipe_of(family)
    h = dc.accelerate(pipe, sweep(backend, family)[-1])
    run(pipe, family)
    b, stats = h.backend, h.stats
    app = stats.space.applicable
    expected = np.zeros_like(stats.computed)
    calls = 2 if family in SEPARATE_CFG else 1
    decisions = h.decisions
    assert len(decisions) == STEPS * calls  # one decision per transformer call
    assert any(d["skipped"] for d in decisions) and not all(d["skipped"] for d in decisions)
    for d in decisions:
        step, branch, skipped = d["step"], d["branch"], d["skipped"]
        if backend == "delta_dit":
            blocks = set(range(b.n_blocks)) - (set(_range(b, step)) if skipped else set())
        else:
            blocks = _computed_blocks(backend, b, skipped, branch)
        for blk in blocks:
            expected[step, blk] += app[blk]
    np.testing.assert_array_equal(stats.computed, expected)
    np.testing.assert_array_equal(stats.computed + stats.reused, np.broadcast_to(app * calls, expected.shape))
    h.remove()


@pytest.mark.parametrize("family", FAMILIES)
def test_taylorseer_counts_match_full_steps(family):
    pipe = pipe_of(family)
    with dc.accelerate(pipe, TaylorSeerConfig(interval=3, order=2, warmup=2)) as h:
        run(pipe, family)
        full = [h.backend.is_full(s) for s in range(STEPS)]
        per_step = h.stats.computed.sum((1, 2))
        calls = 2 if family in SEPARATE_CFG else 1
        n_sites = int(h.stats.space.applicable.sum()) * calls
        assert per_step.tolist() == [n_sites if f else 0 for f in full]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", (*SEPARATE_CFG, "pixart"))
def test_state_is_per_branch(family, backend):
    pipe = pipe_of(family)
    with dc.accelerate(pipe, sweep(backend, family)[-1]) as h:
        run(pipe, family)
        b = h.backend
        state = b.factors if backend == "taylorseer" else b.last if backend == "cg_taylor" else b.state
        assert set(state) == ({0, 1} if family in SEPARATE_CFG else {0})


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_is_per_instance_and_reproducible(backend):
    fam = "flux"
    a, b = pipe_of(fam), build_tiny_pipeline(fam, seed=1)
    cfg = cfg_b = sweep(backend, fam)[-1]
    if backend == "erta":  # a profile is tied to one model: profile the second one too
        cfg_b = ERTACacheConfig(profile_erta(b, [tiny_call_kwargs(fam, STEPS, 10)], num_reuse=3,
                                             criterion="residual", fit_corrections=False))
    ha = dc.accelerate(a, cfg)
    alone_a = run(a, fam, seed=3)
    hb = dc.accelerate(b, cfg_b)  # same config object (except ERTACache), second instance
    assert hb.backend is not ha.backend
    alone_b = run(b, fam, seed=3)
    again_a = run(a, fam, seed=3)
    both_b = run(b, fam, seed=3)
    ha.remove()
    hb.remove()
    assert torch.equal(again_a, alone_a) and torch.equal(both_b, alone_b)
    assert not torch.equal(alone_a, alone_b)


def ha_log_tail(decisions):
    """(step, branch, skipped) decisions of the last generation."""
    last = max(d["generation"] for d in decisions)
    return [(d["generation"], d["step"], d["branch"], d["skipped"]) for d in decisions if d["generation"] == last]


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "taylorseer"])
def test_decisions_reproducible(backend):
    fam = "wan"
    pipe = pipe_of(fam)
    with dc.accelerate(pipe, sweep(backend, fam)[1]) as h:
        out1 = run(pipe, fam, seed=5)
        log1 = [x[1:] for x in ha_log_tail(h.decisions)]
        out2 = run(pipe, fam, seed=5)
        log2 = [x[1:] for x in ha_log_tail(h.decisions)]
    assert torch.equal(out1, out2) and log1 == log2


# -- memory -----------------------------------------------------------------------------------------
def _stream_bytes(family: str) -> dict[str, int]:
    """Bytes of block 0's input streams per call (hidden_states, encoder_hidden_states)."""
    pipe = pipe_of(family)
    block = dc.get_adapter(family).blocks(pipe.transformer)[0]
    seen: dict[str, int] = {}

    def pre(module, args, kwargs):
        hs = kwargs.get("hidden_states", args[0] if args else None)
        seen["hs"] = hs.numel() * hs.element_size()
        ehs = kwargs.get("encoder_hidden_states")
        seen["ehs"] = ehs.numel() * ehs.element_size() if ehs is not None else 0

    handle = block.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        pipe(**tiny_call_kwargs(family, 2, 0))
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "taylorseer"])
@pytest.mark.parametrize("family", ("pixart", "dit", "flux", "wan"))
def test_cache_bytes_match_tensor_count(family, backend):
    sb = _stream_bytes(family)
    hs = sb["hs"]
    streams = hs + (sb["ehs"] if family == "flux" else 0)  # flux blocks carry both streams
    branches = 2 if family in SEPARATE_CFG else 1
    expected = {
        "delta_dit": branches * streams,  # Δ
        "first_block": branches * 2 * streams,  # r_ref + R_tail
        "teacache": branches * (hs + streams),  # previous modulated input (image stream) + R
        "erta": branches * streams,  # R
        "cg_taylor": 2 * streams + branches * 2 * streams,  # first-block factors (gate branch) + last-block factors
    }[backend]
    pipe = pipe_of(family)
    cfg = sweep(backend, family)[1]
    with dc.accelerate(pipe, cfg) as h:
        run(pipe, family)
        assert h.backend.cache_bytes() == expected
    assert h.backend.cache_bytes() == 0  # remove() drops the caches


@pytest.mark.parametrize("family", ("pixart", "flux"))
def test_taylorseer_cache_bytes(family):
    order = 2
    pipe = pipe_of(family)
    with dc.accelerate(pipe, TaylorSeerConfig(interval=2, order=order, warmup=3)) as h:
        run(pipe, family)
        b = h.backend
        cells = [f for branch in b.factors.values() for f in branch.values()]
        assert len(cells) == int(h.stats.space.applicable.sum()) * (2 if family in SEPARATE_CFG else 1)
        assert all(len(f.factors) == order + 1 for f in cells)  # (O+1) tensors per component
        from dit_cache.backends.base import tensor_bytes

        assert b.cache_bytes() == sum((order + 1) * tensor_bytes(f.factors[0]) for f in cells)


# -- TeaCache's modulated input ---------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_teacache_modulated_input_matches_attention_input(family):
    """The recomputed modulated input equals what block 0's first attention actually receives."""
    from dit_cache.backends.teacache import modulated_input

    pipe = pipe_of(family)
    block = dc.get_adapter(family).blocks(pipe.transformer)[0]
    attn = dc.get_adapter(family).sites(pipe.transformer)[0].module
    got: dict[str, torch.Tensor] = {}

    def block_pre(module, args, kwargs):
        got.setdefault("m", modulated_input(family, module, args, kwargs))

    def attn_pre(module, args, kwargs):
        got.setdefault("attn", kwargs.get("hidden_states", args[0] if args else None))

    hs = [block.register_forward_pre_hook(block_pre, with_kwargs=True),
          attn.register_forward_pre_hook(attn_pre, with_kwargs=True)]
    try:
        with torch.no_grad():
            pipe(**tiny_call_kwargs(family, 2, 0))
    finally:
        for x in hs:
            x.remove()
    torch.testing.assert_close(got["m"].to(got["attn"].dtype), got["attn"])


def test_unsupported_family_is_named():
    from dit_cache import ScheduleSpace

    space = ScheduleSpace("mymodel", ("0", "1"), ("attn",), np.ones((2, 1), bool))
    with pytest.raises(ValueError, match="supported families: pixart, dit, flux, sd3, wan"):
        TeaCacheConfig().build_backend(space, torch.nn.Identity())
    one = ScheduleSpace("pixart", ("0",), ("attn1",), np.ones((1, 1), bool))
    with pytest.raises(ValueError, match="at least 2 blocks"):
        CGTaylorConfig().build_backend(one, torch.nn.Identity())


@pytest.mark.parametrize("bad", [dict(interval=0), dict(warmup=0), dict(order=-1)])
def test_bad_taylorseer_config(bad):
    with pytest.raises(ValueError, match="TaylorSeerConfig needs"):
        TaylorSeerConfig(**bad)


@pytest.mark.parametrize("family", SEPARATE_CFG)
def test_cg_taylor_gate_is_taken_on_the_conditional_branch(family):
    """Separate cond/uncond calls: branch 0 decides, branch 1 follows (and skips block 0 too)."""
    pipe = pipe_of(family)
    with dc.accelerate(pipe, CGTaylorConfig(0.5, warmup=2)) as h:
        run(pipe, family)
        by_branch = {br: [d["skipped"] for d in h.decisions if d["branch"] == br] for br in (0, 1)}
        assert by_branch[0] == by_branch[1] and any(by_branch[0])
        computed = h.stats.computed.sum(2)  # [steps, blocks]
        for step, skipped in enumerate(by_branch[0]):
            assert computed[step, 0] == (1 if skipped else 2) * h.stats.space.applicable[0].sum()
        assert set(h.backend.errors) == {i for i in range(2, STEPS - 1)}  # gated steps: after warm-up, not last
