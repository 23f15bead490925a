"""ERTACache and TeaCache profiles: JSON round trip, rejection for another model / step count, CLI."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

import dit_cache as dc
from dit_cache.backends import profiles
from dit_cache.backends.erta import ERTACacheConfig, uniform_steps
from dit_cache.backends.erta_profile import profile_erta
from dit_cache.backends.teacache import TeaCacheConfig, calibrate_teacache
from dit_cache.cli import main
from dit_cache.zoo.tiny_random import build_tiny_pipeline, tiny_call_kwargs

STEPS = 8


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_pipeline("pixart")


@pytest.fixture(scope="module")
def erta(pipe):
    return profile_erta(pipe, [tiny_call_kwargs("pixart", STEPS, s) for s in (1, 2)], num_reuse=3)


def _run(pipe, steps=STEPS, seed=0):
    return pipe(**tiny_call_kwargs("pixart", steps, seed)).images


def test_erta_profile_contents(erta):
    assert erta["format"] == "dit-cache-profile" and erta["backend"] == "erta" and erta["steps"] == STEPS
    reuse = erta["reuse_steps"]
    assert len(reuse) == 3 and 0 not in reuse and STEPS - 1 not in reuse
    assert all(b - a > 1 for a, b in itertools.pairwise(reuse))  # at most one reuse step in a row
    # the chosen steps are the lowest-error admissible ones: every unchosen step with lower error neighbours one
    errs = erta["step_errors"]
    for i in range(1, STEPS - 1):
        if i not in reuse and errs[i] < max(errs[j] for j in reuse):
            assert i - 1 in reuse or i + 1 in reuse
    assert set(erta["linear"]) == {str(i) for i in reuse}
    assert all(erta["phi"][i] == 1.0 for i in range(STEPS) if i not in reuse)
    assert all(abs(erta["phi"][i] - 1.0) <= 0.1 for i in reuse)  # within the parabola's clip (2h)
    cal = erta["calibration_mse"]  # each fitted part lowers the calibration error (or is switched off)
    assert cal["linear+phi"] <= cal["linear"] <= cal["uncorrected"]
    assert erta["linear_scale"] in (0.0, 0.25, 0.5, 1.0)


@pytest.mark.parametrize("criterion", ["output", "residual"])
def test_erta_other_criteria_and_shared_errors(pipe, erta, criterion):
    calls = [tiny_call_kwargs("pixart", STEPS, s) for s in (1, 2)]
    prof = profile_erta(pipe, calls, num_reuse=2, criterion=criterion, fit_corrections=criterion == "output")
    assert prof["criterion"] == criterion and len(prof["reuse_steps"]) == 2 and prof["step_errors"][0] == 0.0
    shared = profile_erta(pipe, calls, num_reuse=2, step_errors=erta["step_errors"], fit_corrections=False)
    assert shared["step_errors"] == erta["step_errors"]
    assert set(shared["reuse_steps"]) <= set(range(1, STEPS - 1))
    with pytest.raises(ValueError, match="criterion must be"):
        profile_erta(pipe, calls, num_reuse=2, criterion="psnr")


def test_erta_profile_json_round_trip(pipe, erta, tmp_path):
    path = profiles.save_profile(erta, tmp_path / "erta.json")
    loaded = profiles.load_profile(path, "erta")
    assert loaded == json.loads(json.dumps(erta))
    with dc.accelerate(pipe, ERTACacheConfig(erta)) as h:
        a = _run(pipe)
        assert h.stats.macs()["speedup"] > 1.2
    with dc.accelerate(pipe, ERTACacheConfig(path)):
        b = _run(pipe)
    assert torch.equal(a, b)


def test_erta_rejects_other_model_and_step_count(erta):
    other = build_tiny_pipeline("pixart", seed=1)
    with pytest.raises(profiles.ProfileError, match="made for another model"):
        dc.accelerate(other, ERTACacheConfig(erta))
    pipe = build_tiny_pipeline("pixart")  # same weights: accepted
    with dc.accelerate(pipe, ERTACacheConfig(erta)):
        with pytest.raises(profiles.ProfileError, match=f"made for {STEPS} steps but the pipeline runs 10"):
            _run(pipe, steps=10)
    flux = build_tiny_pipeline("flux")
    with pytest.raises(profiles.ProfileError, match="family 'pixart'"):
        dc.accelerate(flux, ERTACacheConfig(erta))
    with pytest.raises(profiles.ProfileError, match="not 'erta'"):
        ERTACacheConfig({**erta, "backend": "teacache"}).build_backend(dc.space_of(pipe.transformer), pipe.transformer)
    with pytest.raises(profiles.ProfileError, match="not a dit-cache profile"):
        ERTACacheConfig({"reuse_steps": []}).build_backend(dc.space_of(pipe.transformer), pipe.transformer)


def test_erta_ablation_parts_lower_error(pipe, erta):
    """Profiled steps beat evenly spaced ones, and rectification does not raise the error (same MACs)."""
    refs = [_run(pipe, seed=s) for s in (20, 21)]
    errs, macs = {}, set()
    for name, kw in {
        "uniform": dict(select="uniform", residual_correction=False, interval_correction=False),
        "steps": dict(residual_correction=False, interval_correction=False),
        "steps+linear": dict(interval_correction=False),
        "full": {},
    }.items():
        with dc.accelerate(pipe, ERTACacheConfig(erta, **kw)) as h:
            errs[name] = sum(float(((_run(pipe, seed=s) - r) ** 2).mean()) for s, r in zip((20, 21), refs))
            macs.add(h.stats.macs()["executed"])
    assert len(macs) == 1  # same MACs for every row
    assert errs["steps"] < errs["uniform"]
    assert errs["steps+linear"] <= errs["steps"] * 1.001
    assert errs["full"] <= errs["steps+linear"] * 1.02, errs  # φ is fitted on other seeds: no large regression


def test_uniform_steps():
    assert uniform_steps(20, 0) == []
    assert uniform_steps(8, 6) == [1, 2, 3, 4, 5, 6]
    s = uniform_steps(20, 6)
    assert len(s) == 6 and min(s) >= 1 and max(s) <= 18
    with pytest.raises(ValueError, match="cannot reuse 7 of 8"):
        uniform_steps(8, 7)


def test_teacache_calibration_round_trip(tmp_path):
    pipe = build_tiny_pipeline("flux")
    prof = calibrate_teacache(pipe, [tiny_call_kwargs("flux", STEPS, s) for s in (1, 2)])
    assert len(prof["coefficients"]) == 5 and prof["fit"]["pairs"] == 2 * 2 * (STEPS - 1)
    path = profiles.save_profile(prof, tmp_path / "tea.json")
    with dc.accelerate(pipe, TeaCacheConfig(0.2, profile=path)) as h:
        np.testing.assert_allclose(h.backend.coefficients, prof["coefficients"])
    with pytest.raises(profiles.ProfileError, match="another model"):
        dc.accelerate(build_tiny_pipeline("flux", seed=1), TeaCacheConfig(0.2, profile=path))
    with pytest.raises(ValueError, match="either coefficients or a profile"):
        TeaCacheConfig(coefficients=[1, 0], profile=path)


def test_cli_profile(tmp_path, capsys):
    prompts = tmp_path / "calib.txt"
    prompts.write_text("# calibration\na red circle\n\na blue square\n")
    out = tmp_path / "p.json"
    assert main(["profile", "--backend", "erta", "--model", "random-tiny", "--prompts", str(prompts),
                 "--steps", "6", "--num-reuse", "2", "--criterion", "residual", "--out", str(out)]) == 0
    prof = profiles.load_profile(out, "erta")
    assert prof["steps"] == 6 and len(prof["reuse_steps"]) == 2 and prof["prompts"] == 2
    assert "reuse steps" in capsys.readouterr().out
    assert main(["profile", "--backend", "erta", "--model", "random-tiny", "--prompts", str(prompts),
                 "--steps", "6", "--num-reuse", "5", "--out", str(out)]) == 2
    assert "cannot choose 5 reuse steps" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    assert main(["profile", "--backend", "teacache", "--prompts", str(empty), "--out", str(out)]) == 2
    assert "has no prompts" in capsys.readouterr().err
