"""Runtime on real tiny pipelines of all five families: exactness, evaluation counts, MACs, state isolation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import dit_cache as dc
from dit_cache.zoo.tiny_random import FAMILIES, build_tiny_pipeline, tiny_call_kwargs

CALLS_PER_STEP = {"pixart": 1, "dit": 1, "flux": 2, "sd3": 1, "wan": 2}  # CFG as separate calls: flux, wan


def _output(pipe, family, steps=20, **over):
    kwargs = {**tiny_call_kwargs(family, num_inference_steps=steps), **over}
    out = pipe(**kwargs)
    arr = out.images if hasattr(out, "images") else out.frames
    return torch.as_tensor(np.asarray(arr)) if not isinstance(arr, torch.Tensor) else arr


def _module_state(model):
    return {n: set(vars(m)) | {f"forward={'forward' in vars(m)}"} for n, m in model.named_modules()}


def _first_linear(module):
    return next(m for m in module.modules() if isinstance(m, torch.nn.Linear))


@pytest.fixture(scope="module", params=FAMILIES)
def family_pipe(request):
    """(family, pipeline, uncached output at 20 steps)."""
    pipe = build_tiny_pipeline(request.param)
    return request.param, pipe, _output(pipe, request.param)


def test_compute_all_is_bit_identical_and_remove_leaves_no_trace(family_pipe):
    family, pipe, ref = family_pipe
    before = _module_state(pipe.transformer)
    handle = dc.accelerate(pipe, dc.compute_all(dc.space_of(pipe.transformer), 20))
    assert torch.equal(_output(pipe, family), ref)
    assert handle.stats.skipped == 0 and handle.stats.compute_fraction() == 1.0
    handle.remove()
    assert _module_state(pipe.transformer) == before
    assert torch.equal(_output(pipe, family), ref)


def test_fora_counts_exact_evaluations_and_macs(family_pipe):
    family, pipe, ref = family_pipe
    space = dc.space_of(pipe.transformer)
    schedule = dc.fora(space, 20, interval=2)
    sites = dc.get_adapter(pipe.transformer).sites(pipe.transformer)
    # count real computation independently: a Linear inside a component runs only when it computes
    # (leaf components such as FLUX's proj_mlp are checked through the measured MACs below)
    probed = [s for s in sites if not isinstance(s.module, torch.nn.Linear)]
    seen = {"n": 0}
    probes = [_first_linear(s.module).register_forward_hook(lambda *a: seen.__setitem__("n", seen["n"] + 1))
              for s in probed]
    try:
        with dc.accelerate(pipe, schedule) as handle:
            counter = FlopCounterMode(display=False)
            with counter, sdpa_kernel(SDPBackend.MATH):
                out = _output(pipe, family)
            stats = handle.stats
            macs = stats.macs()
    finally:
        for p in probes:
            p.remove()
    calls = CALLS_PER_STEP[family]
    expected = 10 * len(sites) * calls  # steps 0, 2, ..., 18 compute every component
    assert expected == stats.evaluations == schedule.evaluations() * calls
    assert seen["n"] == 10 * len(probed) * calls
    assert stats.skipped == expected and stats.calls == 20 * calls
    assert stats.computed.sum((1, 2)).tolist() == [len(sites) * calls, 0] * 10
    measured = counter.get_flop_counts()[type(pipe.transformer).__name__]
    assert macs["executed"] == sum(measured.values()) // 2  # the cost model equals what actually ran
    assert 1.5 < macs["speedup"] < 2.0
    assert torch.isfinite(out.float()).all() and not torch.equal(out, ref)


def test_cfg_branches_keep_separate_caches():
    """Wan calls cond then uncond: each reused value is that branch's own last computed output."""
    pipe = build_tiny_pipeline("wan")
    site = dc.get_adapter(pipe.transformer).sites(pipe.transformer)[-1]  # last block's ff: sees the text
    outputs = []
    probe = site.module.register_forward_hook(lambda m, a, o: outputs.append(o.clone()))
    try:
        with dc.accelerate(pipe, dc.fora(dc.space_of(pipe.transformer), 4, 2)) as handle:
            _output(pipe, "wan", steps=4)
            assert set(handle.backend.state.caches) == {0, 1}
    finally:
        probe.remove()
    (c0, u0, c1, u1, c2, u2, c3, u3) = outputs  # steps 1 and 3 reuse
    assert not torch.equal(c0, u0)
    assert torch.equal(c1, c0) and torch.equal(u1, u0) and torch.equal(c3, c2) and torch.equal(u3, u2)


def test_two_pipelines_do_not_share_state():
    a, b = build_tiny_pipeline("pixart", seed=1), build_tiny_pipeline("pixart", seed=2)
    sa, sb = (dc.fora(dc.space_of(p.transformer), 20, 3) for p in (a, b))
    with dc.accelerate(a, sa), dc.accelerate(b, sb):
        solo_a, solo_b = _output(a, "pixart"), _output(b, "pixart")

        inner = {}

        def run_b_inside(step, t, latents):  # a whole generation of b in the middle of a's
            if step == 7:
                inner["b"] = _output(b, "pixart")

        mixed_a = _output(a, "pixart", callback=run_b_inside, callback_steps=1)
    assert torch.equal(mixed_a, solo_a) and torch.equal(inner["b"], solo_b)


def test_step_count_mismatch_errors_or_resamples():
    pipe = build_tiny_pipeline("pixart")
    sched = dc.fora(dc.space_of(pipe.transformer), 20, 2)
    with dc.accelerate(pipe, sched):
        with pytest.raises(dc.ScheduleError, match=r"has 20 steps but the pipeline runs 10.*resample=True"):
            _output(pipe, "pixart", steps=10)
    with dc.accelerate(pipe, sched, resample=True) as handle:
        _output(pipe, "pixart", steps=10)
        expected = sched.resample(10).compute.sum((1, 2)).tolist()
        assert handle.stats.computed.sum((1, 2)).tolist() == expected


def test_bare_transformer_past_schedule_end_errors():
    pipe = build_tiny_pipeline("pixart")
    with dc.accelerate(pipe.transformer, dc.fora(dc.space_of(pipe.transformer), 5, 2)):
        with pytest.raises(dc.ScheduleError, match="reached step 6 but the schedule has 5 steps"):
            _output(pipe, "pixart", steps=8)


def test_new_generation_resets_and_resolution_may_change():
    pipe = build_tiny_pipeline("pixart")
    sched = dc.fora(dc.space_of(pipe.transformer), 20, 2)
    with dc.accelerate(pipe, sched) as handle:
        small = _output(pipe, "pixart")
        big = _output(pipe, "pixart", height=32, width=32)
        again = _output(pipe, "pixart")
        assert handle.stats.generations == 3
        assert len(handle.stats._tallies) == 2  # two input shapes, costed separately
    with dc.accelerate(pipe, sched):
        assert torch.equal(_output(pipe, "pixart", height=32, width=32), big)
    assert torch.equal(small, again) and big.shape[-1] == 2 * small.shape[-1]


def test_schedule_for_another_model_is_rejected():
    pipe = build_tiny_pipeline("pixart", num_layers=3)
    other = dc.fora(dc.space_of(build_tiny_pipeline("pixart").transformer), 20, 2)
    with pytest.raises(dc.ScheduleError, match=r"schedule has 4 blocks .* but the model has 3"):
        dc.accelerate(pipe, other)
    flux = dc.fora(dc.space_of(build_tiny_pipeline("flux").transformer), 20, 2)
    with pytest.raises(dc.ScheduleError, match="family 'flux' but the model is 'pixart'"):
        dc.accelerate(pipe, flux)


def test_double_accelerate_and_unknown_class_errors():
    pipe = build_tiny_pipeline("pixart")
    sched = dc.compute_all(dc.space_of(pipe.transformer), 20)
    with dc.accelerate(pipe, sched):
        with pytest.raises(RuntimeError, match="already accelerated"):
            dc.accelerate(pipe, sched)
    with pytest.raises(TypeError, match=r"(?s)no adapter for Linear.*PixArtTransformer2DModel.*register_adapter"):
        dc.accelerate(torch.nn.Linear(2, 2), sched)
    with pytest.raises(TypeError, match="has no `transformer` module"):
        dc.accelerate(object(), sched)


def test_nan_output_raises_a_clear_error():
    pipe = build_tiny_pipeline("pixart")
    with torch.no_grad():
        pipe.transformer.proj_out.weight[0, 0] = float("nan")
    with dc.accelerate(pipe, dc.compute_all(dc.space_of(pipe.transformer), 20), check_finite=True):
        with pytest.raises(FloatingPointError, match="non-finite transformer output at step 0"):
            _output(pipe, "pixart")


class _ToyBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = torch.nn.Linear(4, 4)

    def forward(self, x):
        return x + self.mlp(x)


class ToyTransformer(torch.nn.Module):
    """A transformer class dit-cache does not know."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([_ToyBlock() for _ in range(3)])

    def forward(self, x, timestep):
        for layer in self.layers:
            x = layer(x)
        return x * (1 + timestep / 1000)


def test_register_adapter_for_a_new_class():
    from dit_cache.adapters import unregister_adapter

    model = ToyTransformer()
    with pytest.raises(TypeError, match="no adapter for ToyTransformer"):
        dc.space_of(model)
    dc.register_adapter(dc.Adapter("toy", ("ToyTransformer",), (dc.BlockGroup("layers", {"mlp": "mlp"}),),
                                   example_inputs=lambda cfg, spec: {}))
    try:
        with pytest.raises(ValueError, match="exists"):
            dc.register_adapter(dc.get_adapter("toy"))
        xs = [torch.randn(2, 4) for _ in range(3)]  # a different input on every step
        ts = [torch.tensor(t) for t in (900.0, 500.0, 100.0)]
        with torch.no_grad():
            ref = [model(x, t) for x, t in zip(xs, ts)]
            with dc.accelerate(model, dc.fora(dc.space_of(model), 3, 2)) as handle:
                got = [model(x, t) for x, t in zip(xs, ts)]
            # step 1 reuses step 0's three mlp outputs; the residual adds run on step 1's input
            h, deltas = xs[0], []
            for layer in model.layers:
                deltas.append(layer.mlp(h))
                h = h + deltas[-1]
            h = xs[1]
            for d in deltas:
                h = h + d
        assert torch.equal(got[0], ref[0]) and torch.equal(got[2], ref[2]) and not torch.equal(got[1], ref[1])
        assert torch.equal(got[1], h * (1 + ts[1] / 1000))
        assert handle.stats.evaluations == 6 and handle.stats.skipped == 3
    finally:
        unregister_adapter("toy")


def test_snapshot_restore_continues_a_generation_exactly():
    """Stop after step k, restore the handle state, run the remaining steps: same result as one run."""
    pipe = build_tiny_pipeline("pixart")
    sched = dc.fora(dc.space_of(pipe.transformer), 6, 2)
    t = pipe.transformer
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    e = torch.randn(2, 5, t.config.caption_channels, generator=torch.Generator().manual_seed(1))
    added = {"resolution": None, "aspect_ratio": None}
    ts = torch.linspace(999, 0, 6)

    def step(i):
        return t(x * (i + 1), encoder_hidden_states=e, timestep=ts[i].expand(2), added_cond_kwargs=added,
                 return_dict=False)[0]

    with torch.no_grad(), dc.accelerate(t, sched) as handle:
        full = [step(i) for i in range(6)]
        first = [step(i) for i in range(3)]  # a new generation, stopped after step 2 (which computed)
        snap = handle.snapshot()
        [step(i) for i in range(2)]  # something else runs in between
        handle.restore(snap)
        rest = [step(i) for i in range(3, 6)]
    assert all(torch.equal(a, b) for a, b in zip(full, first + rest))


# -- step tracking ----------------------------------------------------------------------------------
def _with_scheduler(family, cls):
    pipe = build_tiny_pipeline(family)
    pipe.scheduler = cls.from_config(pipe.scheduler.config)
    return pipe


@pytest.mark.parametrize("cls", ["HeunDiscreteScheduler", "KDPM2DiscreteScheduler"])
def test_second_order_samplers_get_one_schedule_row_per_evaluation(cls):
    """Heun / KDPM2 evaluate the transformer twice per step: the repeat is a step of its own, not a CFG branch."""
    import diffusers

    pipe = _with_scheduler("pixart", getattr(diffusers, cls))
    space = dc.space_of(pipe.transformer)
    ref = _output(pipe, "pixart", steps=6)
    evals = len(pipe.scheduler.timesteps)
    assert evals == 11
    with dc.accelerate(pipe, dc.compute_all(space, evals)):
        assert torch.equal(_output(pipe, "pixart", steps=6), ref)
    with dc.accelerate(pipe, dc.fora(space, evals, 2)) as h:
        out = _output(pipe, "pixart", steps=6)
        assert h.stats.calls == evals and not torch.equal(out, ref)
        assert h.stats.computed.sum((1, 2)).tolist() == [12 if i % 2 == 0 else 0 for i in range(evals)]
    with dc.accelerate(pipe, dc.fora(space, 6, 2)):
        with pytest.raises(dc.ScheduleError, match=f"pipeline runs 11 \\({cls} evaluates the transformer 11 times for 6 steps\\)"):
            _output(pipe, "pixart", steps=6)


@pytest.mark.parametrize("bare", [False, True])
def test_a_failed_first_call_does_not_poison_the_next_generation(bare):
    """After a generation dies in its first transformer call, the next one on the same handle is a fresh one."""
    pipe = build_tiny_pipeline("pixart")
    space = dc.space_of(pipe.transformer)
    with dc.accelerate(pipe.transformer if bare else pipe, dc.fora(space, 20, 2)):
        ref = _output(pipe, "pixart")
    boom = {"left": 1}

    def fail_once(module, args):
        if boom["left"]:
            boom["left"] -= 1
            raise KeyboardInterrupt

    with dc.accelerate(pipe.transformer if bare else pipe, dc.fora(space, 20, 2)) as h:
        hook = pipe.transformer.transformer_blocks[0].register_forward_pre_hook(fail_once)
        try:
            with pytest.raises(KeyboardInterrupt):
                _output(pipe, "pixart")
            assert torch.equal(_output(pipe, "pixart"), ref)
            assert h.stats.generations == 2 and h.ctx.generation == 1
        finally:
            hook.remove()


def test_check_finite_error_at_step_0_does_not_poison_the_next_generation():
    pipe = build_tiny_pipeline("pixart")
    space = dc.space_of(pipe.transformer)
    with dc.accelerate(pipe, dc.fora(space, 20, 2)):
        ref = _output(pipe, "pixart")
    w = pipe.transformer.proj_out.weight
    saved = w[0, 0].item()
    with dc.accelerate(pipe, dc.fora(space, 20, 2), check_finite=True):
        with torch.no_grad():
            w[0, 0] = float("nan")
        with pytest.raises(FloatingPointError, match="at step 0"):
            _output(pipe, "pixart")
        with torch.no_grad():
            w[0, 0] = saved
        assert torch.equal(_output(pipe, "pixart"), ref)


def _host_syncs(fn) -> int:
    """`aten._local_scalar_dense` calls (what `.item()`, `float(t)`, `bool(t)` of a tensor dispatch to) in fn()."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                Count.n += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.n


@pytest.mark.parametrize("family", ["pixart", "flux"])
def test_static_schedules_add_no_host_sync_to_a_pipeline_generation(family):
    """With a pipeline, steps come from its scheduler: hooks add 0 syncs; check_finite adds one per call."""
    pipe = build_tiny_pipeline(family)
    space = dc.space_of(pipe.transformer)
    base = _host_syncs(lambda: _output(pipe, family))
    for sched in (dc.compute_all(space, 20), dc.fora(space, 20, 2), dc.fora(space, 20, 3).with_forecast()):
        with dc.accelerate(pipe, sched):
            assert _host_syncs(lambda: _output(pipe, family)) == base
    with dc.accelerate(pipe, dc.fora(space, 20, 2), check_finite=True):
        assert _host_syncs(lambda: _output(pipe, family)) == base + 20 * CALLS_PER_STEP[family]


@pytest.mark.parametrize("family", ["pixart", "flux"])
def test_gated_backends_sync_at_most_once_per_call(family):
    """With a pipeline, a gated backend's decision costs at most one host sync per transformer call (its gate);
    MagCache's gate is host arithmetic on calibrated ratios: none."""
    pipe = build_tiny_pipeline(family)
    base = _host_syncs(lambda: _output(pipe, family))
    calls = 20 * CALLS_PER_STEP[family]
    for config, most in ((dc.FirstBlockCacheConfig(threshold=0.1), calls), (dc.TeaCacheConfig(threshold=0.2), calls),
                         (dc.CGTaylorConfig(threshold=0.1), calls),
                         (dc.MagCacheConfig(mag_ratios=[1.0] * 20, threshold=0.1), 0)):
        with dc.accelerate(pipe, config) as h:
            extra = _host_syncs(lambda: _output(pipe, family)) - base
            assert 0 <= extra <= most, (type(config).__name__, extra, calls)
            if most:
                assert extra > 0  # the counter sees the gates' syncs: the bound has teeth
            assert h.stats.calls == calls
