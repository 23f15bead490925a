"""MagCache: calibrated magnitude ratios, never-skip settings bit-exact, skip decisions = counted work, per-branch
state, remove() exact, profiles checked against model and step count, the spec grammar and `dit-cache profile`."""

from __future__ import annotations

import json

import pytest
import torch

import dit_cache as dc
from dit_cache.backends.magcache import calibrate_magcache
from dit_cache.backends.profiles import ProfileError
from dit_cache.zoo.tiny_random import tiny_call_kwargs

STEPS = 10


@pytest.fixture(scope="module")
def model():
    return dc.load_pipeline("random-tiny:pixart")


@pytest.fixture(scope="module")
def profile(model):
    return calibrate_magcache(model.pipe, model.calls(["a red circle", "two blue squares"], steps=STEPS),
                              model=model.name)


def _run(pipe, family, config):
    with dc.accelerate(pipe, config) as h:
        out = pipe(**tiny_call_kwargs(family, num_inference_steps=STEPS)).images
        dec = "".join("S" if d["skipped"] else "C" for d in h.decisions)
        return out, dec, h.stats.skipped, h.space.applicable.sum()


def test_calibration_gives_one_ratio_per_step(profile):
    r = profile["mag_ratios"]
    assert profile["backend"] == "magcache" and profile["steps"] == STEPS and len(r) == STEPS
    assert r[0] == 1.0 and all(x > 0 for x in r) and len(set(r[1:])) > 1  # measured, not a constant


def test_never_skip_is_bit_exact_and_remove_leaves_no_trace(model, profile):
    pipe = model.pipe
    ref = pipe(**tiny_call_kwargs("pixart", num_inference_steps=STEPS)).images
    out, dec, skipped, _ = _run(pipe, "pixart", dc.MagCacheConfig(threshold=0.0, profile=profile))
    assert torch.equal(out, ref) and dec == "C" * STEPS and skipped == 0
    assert torch.equal(pipe(**tiny_call_kwargs("pixart", num_inference_steps=STEPS)).images, ref)


def test_skips_follow_the_accumulated_ratio_error(model, profile):
    """With ratios all 1 the error never grows: every step after retention skips, at most K in a row."""
    flat = [1.0] * STEPS
    _, dec, skipped, cells = _run(model.pipe, "pixart", dc.MagCacheConfig(mag_ratios=flat, max_skip_steps=2,
                                                                         retention_ratio=0.2))
    assert dec == "CC" + "SSC" * 2 + "SC"  # 2 retained, K = 2, the last step runs
    assert skipped == dec.count("S") * cells
    big = [1.0] + [1.5] * (STEPS - 1)  # |1 - 1.5| = 0.5 > δ at once: nothing skips
    assert _run(model.pipe, "pixart", dc.MagCacheConfig(mag_ratios=big, threshold=0.3))[1] == "C" * STEPS
    _, dec, _, _ = _run(model.pipe, "pixart", dc.MagCacheConfig(threshold=0.2, profile=profile))
    out, _, _, _ = _run(model.pipe, "pixart", dc.MagCacheConfig(threshold=0.2, profile=profile))
    assert torch.isfinite(out).all()


def test_per_branch_state_with_separate_cfg_calls():
    pipe = dc.load_pipeline("random-tiny:flux").pipe
    _, dec, _, _ = _run(pipe, "flux", dc.MagCacheConfig(mag_ratios=[1.0] * STEPS, max_skip_steps=2))
    assert dec == "".join(c * 2 for c in "CC" + "SSC" * 2 + "SC")


def test_profiles_are_checked(model, profile, tmp_path):
    pipe = model.pipe
    with pytest.raises(ProfileError, match="ratios cover 10 steps but the pipeline runs 6"):
        with dc.accelerate(pipe, dc.MagCacheConfig(profile=profile)):
            pipe(**tiny_call_kwargs("pixart", num_inference_steps=6))
    other = dc.load_pipeline("random-tiny:pixart:3").pipe
    with pytest.raises(ProfileError, match="made for another model"):
        dc.accelerate(other, dc.MagCacheConfig(profile=profile))
    with pytest.raises(ValueError, match="exactly one of profile"):
        dc.MagCacheConfig()
    path = tmp_path / "mag.json"
    path.write_text(json.dumps(profile))
    spec = dc.resolve_spec(f"magcache:{path}:0.1")
    assert isinstance(spec.value, dc.MagCacheConfig) and spec.name == "magcache-mag-0.1"
    with pytest.raises(dc.ScheduleError, match="is a magcache profile, not a schedule: use the spec magcache:"):
        dc.resolve_spec(str(path))


def test_profile_cli_writes_a_magcache_profile(tmp_path):
    from dit_cache.cli import main

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\ntwo blue squares\n")
    assert main(["profile", "--backend", "magcache", "--model", "random-tiny", "--prompts", str(prompts),
                 "--steps", "6", "-o", str(tmp_path / "m.json")]) == 0
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["backend"] == "magcache" and len(data["mag_ratios"]) == 6


def test_ratios_shorter_than_a_bare_transformer_generation_are_named(model):
    """Without a pipeline the step count is unknown up front: running past the ratios raises, never clamps."""
    with pytest.raises(ProfileError, match="ratios cover 4 steps but the generation reached step 5"):
        with dc.accelerate(model.pipe.transformer, dc.MagCacheConfig(mag_ratios=[1.0] * 4)):
            model.pipe(**tiny_call_kwargs("pixart", num_inference_steps=6))
