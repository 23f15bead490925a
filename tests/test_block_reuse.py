"""Block-residual reuse (`dc.BlockReuseConfig`): exact against an independent reference, bit-exact when
nothing is reused, MACs as executed, per-branch residuals, `remove()` exact, and fullgraph compile."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import dit_cache as dc
from dit_cache.schedule import ScheduleError
from dit_cache.zoo.tiny_random import build_tiny_pipeline, tiny_call_kwargs
from eval.flops import TransformerMacs

STEPS = 6


@pytest.fixture(scope="module", params=["pixart", "flux"])
def family_pipe(request):
    return request.param, build_tiny_pipeline(request.param)


def _run(pipe, family, steps=STEPS, **kw):
    with torch.no_grad():
        return pipe(**{**tiny_call_kwargs(family, steps, 0), **kw}).images


def _one_block_reused(space, block: int, step: int):
    """Compute everything except `block` at `step`, whose every component is reused."""
    compute = np.ones((STEPS, *space.shape), bool)
    compute[step, block] = ~space.applicable[block]  # cells of components the block lacks stay "compute"
    return dc.Schedule(compute, space, {"name": f"reuse-b{block}-s{step}"})


def test_never_reusing_is_bit_exact_and_remove_restores(family_pipe) -> None:
    family, pipe = family_pipe
    ref = _run(pipe, family)
    space = dc.space_of(pipe.transformer)
    with dc.accelerate(pipe, dc.BlockReuseConfig(dc.compute_all(space, STEPS))) as h:
        assert torch.equal(_run(pipe, family), ref)
        assert h.stats.macs()["speedup"] == 1.0
    with dc.accelerate(pipe, dc.BlockReuseConfig(dc.fora(space, STEPS, 2))):
        assert not torch.equal(_run(pipe, family), ref)
    assert torch.equal(_run(pipe, family), ref)  # remove() left nothing behind
    # no hook left (FLUX's pipeline itself creates an empty registry on the transformer: its cache_context)
    assert not any(getattr(m, "_diffusers_hook", None) and m._diffusers_hook.hooks for m in pipe.transformer.modules())


def _calls_per_step(pipe, family) -> int:
    """Transformer calls per denoising step of the tiny pipeline (CFG batched: 1)."""
    n = [0]
    handle = pipe.transformer.register_forward_pre_hook(lambda *_: n.__setitem__(0, n[0] + 1))
    try:
        _run(pipe, family)
    finally:
        handle.remove()
    return n[0] // STEPS


def test_a_fully_reused_block_returns_input_plus_its_last_residual(family_pipe) -> None:
    """Reference: plain torch forward hooks on the unhooked model that record block 1's out − in at step 1 and
    return in + that residual at step 2 (streams as the block returns them)."""
    family, pipe = family_pipe
    space = dc.space_of(pipe.transformer)
    block = dc.get_adapter(pipe.transformer).blocks(pipe.transformer)[1]
    names = dc.get_adapter(pipe.transformer).block_outputs
    calls, saved = [0], {}
    per_step = _calls_per_step(pipe, family)

    def hook(_m, args, kwargs, out):
        step, branch = divmod(calls[0], per_step)
        calls[0] += 1
        ins = tuple(kwargs[n] if n in kwargs else args[0] for n in names)  # PixArt passes hidden_states first
        outs = (out,) if len(names) == 1 else tuple(out)
        if step == 1:
            saved[branch] = tuple(o - i for o, i in zip(outs, ins))
        if step == 2:
            new = tuple(i + r for i, r in zip(ins, saved[branch]))
            return new[0] if len(names) == 1 else new
        return out

    handle = block.register_forward_hook(hook, with_kwargs=True)
    try:
        ref = _run(pipe, family)
    finally:
        handle.remove()
    with dc.accelerate(pipe, dc.BlockReuseConfig(_one_block_reused(space, 1, 2))) as h:
        out = _run(pipe, family)
        reused = h.stats.reused
        assert reused[2, 1].sum() == space.applicable[1].sum() * per_step == reused.sum()  # that block, that step only
    assert torch.equal(out, ref)


@pytest.mark.parametrize("spec", ["fora:2", "fora:3", "random:0.5:1"])
def test_macs_are_what_runs_and_less_than_ecad_where_blocks_hold_other_work(family_pipe, spec: str) -> None:
    family, pipe = family_pipe
    space = dc.space_of(pipe.transformer)
    sched = dc.resolve_spec(spec, space, STEPS).value
    with dc.accelerate(pipe, sched) as h:
        _run(pipe, family)
        ecad = h.stats.macs()["executed"]
    with dc.accelerate(pipe, dc.BlockReuseConfig(sched)) as h:
        with TransformerMacs(pipe.transformer) as counter:
            _run(pipe, family)
        mine = h.stats.macs()["executed"]
        skipped = [(s, b) for s in range(STEPS) for b in range(space.shape[0]) if h.backend.block_plan(b, _ctx(s))[0]]
    assert counter.macs == mine
    assert skipped  # every one of these schedules fully reuses some block
    assert (mine < ecad) if family == "flux" else (mine == ecad)  # FLUX blocks hold adaLN linears; PixArt's none


def _ctx(step: int):
    from dit_cache.backends import StepContext

    return StepContext(step=step)


def test_fora_keeps_one_residual_per_block_and_no_component_outputs() -> None:
    pipe = build_tiny_pipeline("pixart")
    space = dc.space_of(pipe.transformer)
    with dc.accelerate(pipe, dc.BlockReuseConfig(dc.fora(space, STEPS, 2))) as h:
        _run(pipe, "pixart")  # steps 0, 2, 4 run every block, keeping its residual for steps 1, 3, 5
        assert not h.backend.state.caches.get(0)  # every reuse of FORA is inside a skipped block
        res = h.backend.residuals[0]
        assert sorted(res) == list(range(space.shape[0]))
        assert h.backend.cache_bytes() == sum(r[0].numel() * r[0].element_size() for r in res.values())


def test_residuals_are_per_cfg_branch() -> None:
    pipe = build_tiny_pipeline("flux")
    space = dc.space_of(pipe.transformer)
    kw = {"true_cfg_scale": 2.0, "negative_prompt": "blur"}
    with dc.accelerate(pipe, dc.BlockReuseConfig(dc.fora(space, STEPS, 2))) as h:
        _run(pipe, "flux", **kw)
        assert sorted(h.backend.residuals) == [0, 1]
        a, b = (h.backend.residuals[k][0][1] for k in (0, 1))
        assert not torch.equal(a, b)  # cond and uncond blocks change their inputs differently


def test_bad_inputs_are_named(tmp_path) -> None:
    pipe = build_tiny_pipeline("pixart")
    other = dc.space_of(build_tiny_pipeline("flux").transformer)
    with pytest.raises(ScheduleError, match="does not fit this model"):
        dc.accelerate(pipe, dc.BlockReuseConfig(dc.fora(other, STEPS, 2)))
    with pytest.raises(ScheduleError, match="not found"):
        dc.accelerate(pipe, dc.BlockReuseConfig(tmp_path / "missing.json"))
    with dc.accelerate(pipe, dc.BlockReuseConfig(dc.fora(dc.space_of(pipe.transformer), STEPS, 2))) as h:
        with pytest.raises(ScheduleError, match="has 6 steps but the pipeline runs 8"):
            _run(pipe, "pixart", steps=8)
        with pytest.raises(NotImplementedError, match="cannot snapshot"):
            h.snapshot()


@pytest.mark.parametrize("scope", ["model", "blocks"])
def test_compiles_fullgraph_equal_to_eager(scope: str) -> None:
    pipe = build_tiny_pipeline("pixart")
    space = dc.space_of(pipe.transformer)
    cfg = dc.BlockReuseConfig(dc.fora(space, 20, 3))
    with dc.accelerate(pipe, cfg):
        ref = _run(pipe, "pixart", steps=20)
    torch._dynamo.reset()
    counters.clear()
    with dc.accelerate(pipe, cfg) as h:
        patterns = h.compile(scope=scope, fullgraph=True, backend="aot_eager")
        assert h.compiled_scope == scope
        out = _run(pipe, "pixart", steps=20)
        graphs = counters["stats"]["unique_graphs"]
        assert torch.equal(_run(pipe, "pixart", steps=20), out)
    assert torch.equal(out, ref)
    assert not counters["graph_break"]
    assert graphs == patterns if scope == "model" else graphs <= 2 * patterns + 1


def test_block_spec_wraps_static_specs(tmp_path) -> None:
    space = dc.space_of(build_tiny_pipeline("pixart").transformer)
    spec = dc.resolve_spec("block:fora:3", space, STEPS)
    assert spec.kind == "block" and spec.name == "block-fora-3" and spec.value.schedule == dc.fora(space, STEPS, 3)
    dc.fora(space, STEPS, 2).save(tmp_path / "f.json")
    assert dc.resolve_spec(f"block:{tmp_path / 'f.json'}", space, STEPS).value.schedule == dc.fora(space, STEPS, 2)
    for text, message in (("block:", "block: wraps a static spec"), ("block:teacache:0.2", "is not a static schedule"),
                          ("block:fora", "fora needs N")):
        with pytest.raises(ScheduleError, match=message):
            dc.resolve_spec(text, space, STEPS)


def test_eval_runs_block_specs_beside_ecad_ones(tmp_path) -> None:
    import json

    from dit_cache.cli import main

    out = tmp_path / "r"
    assert main(["eval", "--model", "random-tiny", "--steps", "4", "--num-prompts", "2", "--batch-size", "1",
                 "--schedules", "fora:2", "block:fora:2", "--metrics", "fidelity", "--repeats", "1", "--warmup", "0",
                 "--quiet", "--out", str(out)]) == 0
    rows = {r["variant"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    assert list(rows) == ["uncached", "fora-2", "block-fora-2"]
    assert rows["block-fora-2"]["backend"] == "BlockReuseConfig" and rows["block-fora-2"]["source"] == "block:fora:2"
    assert rows["block-fora-2"]["macs_per_image"] == rows["fora-2"]["macs_per_image"]  # PixArt blocks: no other work
