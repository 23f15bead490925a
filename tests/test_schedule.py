"""Schedule: generators, validation errors, JSON round trip, resampling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dit_cache import (
    Schedule,
    ScheduleError,
    ScheduleWarning,
    cache_component,
    compute_all,
    fora,
    random_schedule,
)


def test_fora_pattern(pixart_space):
    s = fora(pixart_space, 10, interval=3, warmup=2)
    steps_computed = [i for i in range(10) if s.compute[i].all()]
    assert steps_computed == [0, 1, 2, 5, 8]
    assert not s.compute[[3, 4, 6, 7, 9]].any()
    assert s.evaluations() == 5 * 12


def test_cache_component_and_random(pixart_space):
    s = cache_component(pixart_space, 8, "ff", 4)
    assert s.compute[:, :, 2].sum(0).tolist() == [2, 2, 2, 2]  # steps 0 and 4
    assert s.compute[:, :, :2].all()
    r = random_schedule(pixart_space, 20, p=0.7, seed=3)
    assert r.compute[0].all() and r == random_schedule(pixart_space, 20, p=0.7, seed=3)
    assert 0.2 < r.compute[1:].mean() < 0.4
    assert r != random_schedule(pixart_space, 20, p=0.7, seed=4)


def test_flux_inapplicable_cells_are_computed(flux_space):
    s = fora(flux_space, 6, 2)
    assert s.compute[1][~flux_space.applicable].all() and not s.compute[1][flux_space.applicable].any()
    d = s.to_dict()
    assert d["compute"][1][0] == "000---" and d["compute"][1][2] == "---000"
    assert Schedule.from_dict(json.loads(json.dumps(d))) == s


def test_json_round_trip(tmp_path, pixart_space):
    s = random_schedule(pixart_space, 12, 0.5, seed=1).with_metadata(metrics={"psnr": 31.5})
    p = s.save(tmp_path / "s.json")
    t = Schedule.load(p)
    assert t == s and t.digest() == s.digest() and t.metadata["metrics"]["psnr"] == 31.5
    assert not t.compute.flags.writeable
    with pytest.raises(ValueError):
        t.compute[0, 0, 0] = False


def _doc(space, steps=3):
    return compute_all(space, steps).to_dict()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("format"), "not a dit-cache schedule"),
        (lambda d: d.update(schema_version=99), "schema_version"),
        (lambda d: d.update(family="unet"), "unknown model family 'unet'"),
        (lambda d: d.update(components=["attn1", "attn2", "mlp"]), "unknown components ['mlp']"),
        (lambda d: d.update(steps=5), "'steps' says 5 but 'compute' has 3"),
        (lambda d: d["compute"][1].pop(), "step 1 has 3 blocks, expected 4"),
        (lambda d: d["compute"][1].__setitem__(0, "1x1"), "step 1 block 0"),
        (lambda d: d["compute"][0].__setitem__(2, "101"), "step 0 reuses block 2 attn2"),
        (lambda d: d.pop("block_ids"), "missing the key 'block_ids'"),
    ],
)
def test_validation_errors(pixart_space, mutate, message):
    d = _doc(pixart_space)
    mutate(d)
    with pytest.raises(ScheduleError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Schedule.from_dict(d)


def test_file_errors(tmp_path):
    with pytest.raises(ScheduleError, match="not found"):
        Schedule.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ScheduleError, match="not valid JSON"):
        Schedule.load(bad)
    ecad = tmp_path / "ecad.json"
    ecad.write_text(json.dumps({"cache_schedule": {}}))
    with pytest.raises(ScheduleError, match="ECAD"):
        Schedule.load(ecad)


def test_shape_errors(pixart_space):
    with pytest.raises(ScheduleError, match="expected \\(steps >= 1, 4 blocks, 3 components\\)"):
        Schedule(np.ones((5, 3, 3), bool), pixart_space)
    with pytest.raises(ScheduleError, match="only booleans"):
        Schedule(np.full((2, 4, 3), 2), pixart_space)


def test_step0_repair_only_when_asked(pixart_space):
    arr = np.ones((4, 4, 3), bool)
    arr[0, 1, 2] = False
    with pytest.raises(ScheduleError, match="step 0 reuses block 1 ff"):
        Schedule(arr, pixart_space)
    with pytest.warns(ScheduleWarning, match="block 1 ff"):
        s = Schedule.repaired(arr, pixart_space)
    assert s.compute[0].all()
    d = s.to_dict()
    d["compute"][0][1] = "110"
    with pytest.warns(ScheduleWarning):
        assert Schedule.from_dict(d, repair=True) == s


def test_resample_nearest_normalized_time(pixart_space):
    s = fora(pixart_space, 20, 2)
    r = s.resample(10)
    src = np.rint(np.linspace(0, 19, 10)).astype(int)  # 0, 2, 4, 6, 8, 11, 13, 15, 17, 19
    expected = s.compute[src].copy()
    expected[0] = True
    assert np.array_equal(r.compute, expected) and r.metadata["resampled_from_steps"] == 20
    assert s.resample(20) is s
    up = s.resample(40)
    assert up.steps == 40 and up.compute[0].all()
    with pytest.raises(ScheduleError):
        s.resample(0)
