"""The one compute instrument of benchmarks/peers.py counts what dit-cache counts, on dit-cache's own runs."""

from __future__ import annotations

import pytest
import torch

import dit_cache as dc
from dit_cache.zoo.tiny_random import build_tiny_pipeline, tiny_call_kwargs
from eval import flops
from eval.flops import TransformerMacs

STEPS = 6


@pytest.fixture(scope="module", params=["pixart", "flux", "dit"])
def family_pipe(request):
    return request.param, build_tiny_pipeline(request.param)


def _accelerate(pipe, spec: str):
    """`dc.accelerate` with a spec of the one grammar (`dit_cache.resolve`)."""
    return dc.accelerate(pipe, dc.resolve_spec(spec, dc.space_of(pipe.transformer), STEPS).value)


def _counted(pipe, family: str) -> int:
    with TransformerMacs(pipe.transformer) as counter, torch.no_grad():
        pipe(**tiny_call_kwargs(family, STEPS, 0))
    return counter.macs


@pytest.mark.parametrize("spec", ["all", "fora:2", "fora:3", "first-block:0.3", "teacache:0.3", "cg-taylor:1.0"])
def test_instrument_equals_dit_cache_macs(family_pipe, spec: str) -> None:
    family, pipe = family_pipe
    with _accelerate(pipe, spec) as h:
        counted = _counted(pipe, family)
        own = h.stats.macs()
    assert counted == own["executed"] > 0
    if spec != "all":
        assert counted < own["full"]  # the instrument sees the skipped work as skipped


def test_uncached_equals_full_macs(family_pipe) -> None:
    family, pipe = family_pipe
    with _accelerate(pipe, "all") as h:
        _counted(pipe, family)
        full = h.stats.macs()["full"]
    assert _counted(pipe, family) == full  # and no hook left behind changes the count


def test_missed_attention_kernels_are_what_closes_the_gap(family_pipe, monkeypatch: pytest.MonkeyPatch) -> None:
    family, pipe = family_pipe
    with_attention = _counted(pipe, family)
    monkeypatch.setattr(flops, "MISSED_ATTENTION", ())
    assert _counted(pipe, family) < with_attention  # torch's counter alone misses the fused attention kernel


def test_a_transformer_that_never_ran_is_an_error(family_pipe) -> None:
    _, pipe = family_pipe
    with pytest.raises(RuntimeError, match="never ran inside TransformerMacs"), TransformerMacs(pipe.transformer):
        pass
