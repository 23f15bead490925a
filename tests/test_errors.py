"""Bad inputs to the runtime get one clear error naming the input and the fix, never a raw traceback or a
quietly different result (issue: "nothing silently wrong")."""

from __future__ import annotations

import json
import threading

import pytest
import torch

import dit_cache as dc
from dit_cache.backends import profiles
from dit_cache.zoo.tiny_random import build_tiny_pipeline, tiny_call_kwargs


@pytest.fixture(scope="module")
def pixart():
    return build_tiny_pipeline("pixart")


def _sched(pipe, steps=20):
    return dc.fora(dc.space_of(pipe.transformer), steps, 2)


@pytest.mark.parametrize("name,content,match", [
    ("binary.json", b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "is not a text"),
    ("nested.json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("broken.json", b'{"format": ', "is not valid JSON"),
    ("list.json", b"[1, 2]", "must be a JSON object"),
])
def test_unreadable_schedule_files(tmp_path, pixart, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(dc.ScheduleError, match=match):
        dc.accelerate(pixart, str(path))
    with pytest.raises(dc.ScheduleError, match="is a folder"):
        dc.accelerate(pixart, str(tmp_path))


def test_malformed_but_plausible_schedule_files(tmp_path, pixart):
    good = _sched(pixart).to_dict()
    cases = [({**good, "metadata": [1]}, "'metadata' must be a JSON object"),
             ({**good, "block_ids": None}, "'block_ids' must be a list"),
             ({**good, "steps": "20"}, "'steps' says '20'"),
             ({**good, "forecast_order": None}, "forecast_order must be an integer")]
    for data, match in cases:
        (tmp_path / "s.json").write_text(json.dumps(data))
        with pytest.raises(dc.ScheduleError, match=match):
            dc.accelerate(pixart, str(tmp_path / "s.json"))


def _ecad(pipe_family="pixart"):
    pipe = build_tiny_pipeline(pipe_family)
    return pipe, dc.to_ecad(dc.fora(dc.space_of(pipe.transformer), 6, 2))


def test_malformed_ecad_files(tmp_path):
    pipe, doc = _ecad()
    sched = doc["cache_schedule"]["schedule"]
    cases = []
    d = json.loads(json.dumps(doc))
    d["cache_schedule"]["schedule"]["002"]["1"] = None
    cases.append((d, "ECAD step 002: expected"))
    d = json.loads(json.dumps(doc))
    d["cache_schedule"]["schedule"]["x"] = sched["001"]
    cases.append((d, "step keys must be numbers"))
    d = json.loads(json.dumps(doc))
    del d["cache_schedule"]["schedule"]["003"]["2"]["attn2"]  # an omitted component silently computed before
    cases.append((d, "ECAD step 003 block 2 has components"))
    for data, match in cases:
        (tmp_path / "e.json").write_text(json.dumps(data))
        with pytest.raises(dc.ScheduleError, match=match):
            dc.accelerate(pipe, str(tmp_path / "e.json"))


def test_ecad_flux_files_count_double_and_single_blocks_apart(tmp_path):
    """Real ECAD FLUX files say "num_blocks": 19, "num_single_blocks": 38 (57 block entries per step)."""
    pipe, doc = _ecad("flux")
    cs = doc["cache_schedule"]
    n_single = sum(b.startswith("single_") for b in cs["schedule"]["000"])
    assert cs["num_single_blocks"] == n_single and cs["num_blocks"] == len(cs["schedule"]["000"]) - n_single
    back = dc.from_ecad(doc)
    assert back == dc.from_ecad(json.loads(json.dumps(doc))) and back.space == dc.space_of(pipe.transformer)
    with pytest.raises(dc.ScheduleError, match="num_single_blocks is 99 but step 000 has"):
        dc.from_ecad({**doc, "cache_schedule": {**cs, "num_single_blocks": 99}})


@pytest.mark.parametrize("make", [
    lambda: dc.FirstBlockCacheConfig(threshold=float("nan")),
    lambda: dc.TeaCacheConfig(threshold=float("inf")),
    lambda: dc.TaylorSeerConfig(interval=2.5),
    lambda: dc.DeltaDiTConfig(interval=True),
    lambda: dc.CGTaylorConfig(threshold="0.1"),
])
def test_config_values_are_never_reinterpreted(make):
    with pytest.raises(ValueError, match=r"must be a (finite |whole )?number"):
        make()


def test_profile_contracts(tmp_path, pixart):
    """A TeaCache profile made for 10 steps refuses a 20-step run; a truncated ERTACache profile refuses to load."""
    calls = [tiny_call_kwargs("pixart", 10, s) for s in range(2)]
    from dit_cache.backends.teacache import calibrate_teacache

    tea = calibrate_teacache(pixart, calls, degree=1)
    assert tea["steps"] == 10
    with dc.accelerate(pixart, dc.TeaCacheConfig(0.2, profile=tea)):
        with pytest.raises(profiles.ProfileError, match="made for 10 steps but the pipeline runs 20"):
            pixart(**tiny_call_kwargs("pixart", 20))
    erta = profiles.new_profile(backend="erta", family="pixart", fingerprint=profiles.model_fingerprint(pixart.transformer),
                                steps=10, reuse_steps=[3, 5], phi=[1.0] * 10, linear={})
    dc.accelerate(pixart, dc.ERTACacheConfig(erta)).remove()
    for bad, match in [({"phi": [1.0] * 4}, "'phi' must hold 10 numbers"), ({"reuse_steps": [0, 12]}, "'reuse_steps'"),
                       ({"linear": {"x": {}}}, "'linear'"), ({"steps": "10"}, "'steps' must be a whole number")]:
        with pytest.raises(profiles.ProfileError, match=match):
            dc.accelerate(pixart, dc.ERTACacheConfig({**erta, **bad}))
    (tmp_path / "p.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(profiles.ProfileError, match="not a text"):
        dc.accelerate(pixart, dc.ERTACacheConfig(tmp_path / "p.json"))


def test_one_handle_driven_from_two_threads_is_refused(pixart):
    """A handle's state belongs to one generation at a time: a second thread gets a clear error, not mixed caches."""
    started, release = threading.Event(), threading.Event()

    def slow(module, args):
        if threading.current_thread().name == "first":
            started.set()
            release.wait(30)

    errors: list[BaseException] = []
    with dc.accelerate(pixart, _sched(pixart)):
        hook = pixart.transformer.transformer_blocks[0].register_forward_pre_hook(slow)
        t = threading.Thread(target=lambda: pixart(**tiny_call_kwargs("pixart", 20)), name="first")
        t.start()
        started.wait(30)
        try:
            with pytest.raises(RuntimeError, match="another thread"):
                pixart.transformer(**_direct_inputs(pixart))
        finally:
            release.set()
            t.join(60)
            hook.remove()
    assert not errors


def _direct_inputs(pipe):
    """Inputs for one direct transformer call."""
    tr = pipe.transformer
    n = tr.config.sample_size
    return {"hidden_states": torch.zeros(1, tr.config.in_channels, n, n),
            "encoder_hidden_states": torch.zeros(1, 4, tr.config.cross_attention_dim),
            "timestep": torch.tensor([999]), "added_cond_kwargs": {"resolution": None, "aspect_ratio": None}}
