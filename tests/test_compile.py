"""Static schedules under `torch.compile(block, fullgraph=True)` (CPU, aot_eager): equal to eager, a graph count
bounded by the per-block (computed, kept) patterns and independent of the step count, no recompiles on a second
generation, and `remove()` undoes the compilation. (fullgraph=True fails on any graph break, so no `.item()` or
other host sync can hide inside a block; the hooks outside blocks add none: tests/test_runtime.py.)"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import dit_cache as dc
from dit_cache.zoo.tiny_random import build_tiny_pipeline, tiny_call_kwargs


def _generate(pipe, family, steps):
    return pipe(**tiny_call_kwargs(family, num_inference_steps=steps)).images


def _compiled_run(pipe, family, sched, steps):
    """(output, unique graphs, patterns, graphs after a second generation) with every block compiled, fullgraph."""
    torch._dynamo.reset()
    counters.clear()
    with dc.accelerate(pipe, sched) as h:
        patterns = h.compile_blocks(fullgraph=True, backend="aot_eager")
        out = _generate(pipe, family, steps)  # compiles (a failure to compile fullgraph raises here)
        graphs = counters["stats"]["unique_graphs"]
        again = _generate(pipe, family, steps)
        assert torch.equal(again, out)
    return out, graphs, patterns, counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("family", ["pixart", "flux"])
def test_static_schedules_compile_fullgraph_per_block(family):
    pipe = build_tiny_pipeline(family)
    space = dc.space_of(pipe.transformer)
    graphs_at = {}
    for steps in (20, 50):
        scheds = [dc.fora(space, steps, 2), dc.fora(space, steps, 3).with_forecast()]
        if steps == 20:  # many patterns: compile_blocks raises dynamo's recompile limit to fit them
            scheds.append(dc.random_schedule(space, steps, 0.3, seed=2))
        for sched in scheds:
            with dc.accelerate(pipe, sched):
                ref = _generate(pipe, family, steps)
            out, graphs, patterns, after = _compiled_run(pipe, family, sched, steps)
            assert torch.equal(out, ref), sched.name
            assert graphs <= 2 * patterns + 1, (sched.name, graphs, patterns)  # never one per step
            assert after == graphs, sched.name  # a second generation reuses every graph
            graphs_at[sched.name.split("-s")[0], steps] = graphs
    assert graphs_at["fora-2", 20] == graphs_at["fora-2", 50] <= 6
    assert graphs_at["fora-3", 20] == graphs_at["fora-3", 50]


def test_remove_undoes_compile_blocks_and_the_recompile_limit():
    pipe = build_tiny_pipeline("pixart")
    space = dc.space_of(pipe.transformer)
    ref = _generate(pipe, "pixart", 6)
    limit = torch._dynamo.config.recompile_limit
    with dc.accelerate(pipe, dc.random_schedule(space, 6, 0.5, seed=1)) as h:
        patterns = h.compile_blocks(backend="aot_eager")
        assert torch._dynamo.config.recompile_limit == limit + 2 * patterns + 1
        assert all(b._compiled_call_impl is not None for b in pipe.transformer.transformer_blocks)
    assert torch._dynamo.config.recompile_limit == limit
    assert all(b._compiled_call_impl is None for b in pipe.transformer.transformer_blocks)
    assert torch.equal(_generate(pipe, "pixart", 6), ref)


def _whole_run(pipe, family, sched, steps):
    """(output, unique graphs, step patterns, graphs after a second generation), the transformer compiled whole."""
    torch._dynamo.reset()
    counters.clear()
    with dc.accelerate(pipe, sched) as h:
        patterns = h.compile(scope="model", fullgraph=True, backend="aot_eager")
        out = _generate(pipe, family, steps)
        graphs = counters["stats"]["unique_graphs"]
        assert torch.equal(_generate(pipe, family, steps), out)
        assert not counters["graph_break"]
    return out, graphs, patterns, counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("family", ["pixart", "flux"])
def test_static_schedules_compile_fullgraph_whole_transformer(family):
    """The whole transformer compiled with fullgraph=True: one graph per distinct step pattern, not per step."""
    pipe = build_tiny_pipeline(family)
    space = dc.space_of(pipe.transformer)
    cases = [(dc.fora(space, 20, 2), 20), (dc.fora(space, 50, 2), 50), (dc.fora(space, 20, 3).with_forecast(), 20),
             (dc.random_schedule(space, 6, 0.4, seed=3), 6)]
    for sched, steps in cases:
        with dc.accelerate(pipe, sched):
            ref = _generate(pipe, family, steps)
        out, graphs, patterns, after = _whole_run(pipe, family, sched, steps)
        assert torch.equal(out, ref), sched.name
        assert graphs == after == patterns, (sched.name, graphs, patterns)
        assert patterns <= steps and (patterns == 2 or not sched.name.startswith("fora")), (sched.name, patterns)
    assert torch.equal(_generate(pipe, family, 6), _generate(build_tiny_pipeline(family), family, 6))  # removed


@pytest.mark.parametrize("family", ["pixart", "flux"])
def test_dynamic_backends_compile_blocks_fullgraph_with_the_gate_outside(family):
    """Block-level backends: each block's forward compiles fullgraph and the skip decision stays eager, so the
    graph count is the number of block classes (+ one input layout), whatever the decisions; outputs and
    decisions equal eager."""
    pipe = build_tiny_pipeline(family)
    space = dc.space_of(pipe.transformer)
    classes = len({type(b) for b in dc.get_adapter(pipe.transformer).blocks(pipe.transformer)})
    for spec in ("first-block:0.2", "teacache:0.3", "cg-taylor:0.2", "delta-dit:2:1:10"):
        cfg = dc.parse_spec(spec, space, 20)
        with dc.accelerate(pipe, cfg) as h:
            ref, decisions = _generate(pipe, family, 20), h.decisions
        assert any(d["skipped"] for d in decisions), spec  # the comparison covers skipped calls
        torch._dynamo.reset()
        counters.clear()
        with dc.accelerate(pipe, cfg) as h:
            with pytest.raises(RuntimeError, match="scope='blocks'"):
                h.compile(scope="model")
            h.compile(fullgraph=True, backend="aot_eager")  # auto: the blocks, the decision eager
            assert h.compiled_scope == "blocks"
            assert torch.equal(_generate(pipe, family, 20), ref), spec
            assert h.decisions == decisions, spec
        assert counters["stats"]["unique_graphs"] <= classes + 1, spec


def test_compile_twice_is_refused_and_remove_undoes_compile():
    pipe = build_tiny_pipeline("pixart")
    space = dc.space_of(pipe.transformer)
    limit = torch._dynamo.config.recompile_limit
    with dc.accelerate(pipe, dc.random_schedule(space, 6, 0.5, seed=1)) as h:
        patterns = h.compile(scope="model", backend="aot_eager")
        assert torch._dynamo.config.recompile_limit == limit + patterns + 1
        with pytest.raises(RuntimeError, match="already compiled"):
            h.compile_blocks()
        hook = pipe.transformer._diffusers_hook.get_hook("dit_cache.step")
    assert hook.compiled is None and not hasattr(pipe.transformer, "_diffusers_hook")
    assert torch._dynamo.config.recompile_limit == limit


def test_step_and_block_pattern_counts_of_the_shipped_schedules():
    """The pattern counts the README quotes (graphs of compile() / compile_blocks()); an unknown `per` is refused."""
    from dit_cache.backends import StaticScheduleBackend
    from dit_cache.ecad import load_schedule_file
    from dit_cache.zoo import ZOO_DIR

    counts = {}
    for name in ("learned-3.16x", "learned-3.81x"):
        b = StaticScheduleBackend(load_schedule_file(ZOO_DIR / "schedules" / "tiny-pixart-shapes" / f"{name}.json"))
        counts[name] = b.compile_patterns(per="step"), b.compile_patterns(per="block")
    assert counts == {"learned-3.16x": (7, 8), "learned-3.81x": (2, 2)}
    space = dc.space_of(build_tiny_pipeline("pixart").transformer)
    fora = StaticScheduleBackend(dc.fora(space, 20, 2))
    assert fora.compile_patterns(per="step") == 2
    with pytest.raises(ValueError, match="per"):
        fora.compile_patterns(per="steps")


def test_compile_auto_compiles_blocks_when_a_schedule_has_many_step_patterns():
    """compile() (scope "auto") compiles the whole transformer for few step patterns and the blocks for more than
    MANY_STEP_PATTERNS, equal to eager with graphs bounded by the block patterns; scope="model" warns there."""
    from dit_cache.runtime import MANY_STEP_PATTERNS

    pipe = build_tiny_pipeline("pixart")
    space = dc.space_of(pipe.transformer)
    many = dc.random_schedule(space, 20, 0.5, seed=1)
    with dc.accelerate(pipe, many) as h:
        ref = _generate(pipe, "pixart", 20)
        assert h.backend.compile_patterns(per="step") > MANY_STEP_PATTERNS
        with pytest.warns(UserWarning, match=r"distinct step patterns: compile\(scope='model'\) compiles the whole"):
            h.compile(scope="model", backend="aot_eager")  # (lazy: nothing is compiled until a call)
    torch._dynamo.reset()
    counters.clear()
    with dc.accelerate(pipe, many) as h:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            patterns = h.compile(fullgraph=True, backend="aot_eager")  # no warning: the cheap scope is taken
        assert h.compiled_scope == "blocks" and patterns == h.backend.compile_patterns()
        assert torch.equal(_generate(pipe, "pixart", 20), ref)
        assert not counters["graph_break"] and counters["stats"]["unique_graphs"] <= 2 * patterns + 1
    assert h.compiled_scope is None  # removed
    with dc.accelerate(pipe, dc.fora(space, 20, 2)) as h, warnings.catch_warnings():
        warnings.simplefilter("error")
        assert h.compile(backend="aot_eager") == 2 and h.compiled_scope == "model"  # 2 patterns: whole, no warning
        with pytest.raises(RuntimeError, match="already compiled"):
            h.compile(scope="blocks")
    with dc.accelerate(pipe, dc.fora(space, 20, 2)) as h, pytest.raises(ValueError, match="scope is one of"):
        h.compile(scope="layers")
