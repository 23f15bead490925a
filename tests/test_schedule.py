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


@pytest.mark.parametrize("interval", [2, 3, 4])
@pytest.mark.parametrize("steps", [10, 15, 30, 50])
def test_resample_keeps_the_rhythm_of_periodic_schedules(pixart_space, interval, steps):
    """FORA-N made for 20 steps, resampled, is FORA-N at the new step count (nearest-step sampling aliased it:
    FORA-2 20->10 became 'compute 5 steps, then reuse 5' at the same MACs)."""
    s = fora(pixart_space, 20, interval)
    r = s.resample(steps)
    native = fora(pixart_space, steps, interval).compute
    assert r.steps == steps and r.metadata["resampled_from_steps"] == 20 and r.name == f"fora-{interval}@20to{steps}"
    if not (interval == 3 and steps in (30, 50)):
        assert np.array_equal(r.compute, native)
    else:  # FORA-3 at 20 ends with a gap of 2 (steps 18, 19): that tail is kept, the rest is native
        assert np.array_equal(r.compute[: steps - 5], native[: steps - 5])
    assert abs(r.compute_fraction() - s.compute_fraction()) <= 0.07  # the compute density is kept


def test_resample_learned_like_schedule_keeps_each_cells_density(pixart_space):
    s = random_schedule(pixart_space, 20, 0.6, seed=3)
    for steps in (10, 15, 30, 50):
        r = s.resample(steps)
        per_cell_src, per_cell_dst = s.compute.mean(0), r.compute.mean(0)
        assert np.abs(per_cell_src - per_cell_dst).max() <= 1.5 / min(steps, 20) + 0.05


def test_resample_edges(pixart_space):
    s = fora(pixart_space, 20, 2)
    assert s.resample(20) is s and s.resample(1).compute.all()
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ScheduleError, match="cannot resample"):
            s.resample(bad)
    f = s.with_forecast(order=2).resample(10)
    assert f.forecast_order == 2 and np.array_equal(f.forecast_mask, ~f.compute)


def test_to_space_maps_blocks_by_relative_depth_per_group():
    """FLUX 2+2 blocks -> 5+2: ends map to ends within each group, the round trip is exact, the runtime runs it."""
    import dit_cache as dc

    small = dc.load_pipeline("random-tiny:flux:2").pipe
    deep = dc.load_pipeline("random-tiny:flux:5").pipe
    sa, sb = dc.space_of(small.transformer), dc.space_of(deep.transformer)
    s = dc.random_schedule(sa, 6, 0.5, seed=1)
    t = s.to_space(sb)
    assert t.space == sb and t.metadata["transferred_from_blocks"] == 4
    for new, old in ((0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 2), (6, 3)):  # round(j*(2-1)/(5-1)) per group
        assert np.array_equal(t.compute[:, new], s.compute[:, old]), (new, old)
    assert np.array_equal(t.to_space(sa).compute, s.compute)
    assert s.to_space(sa) is s
    with dc.accelerate(deep, t) as h:
        from dit_cache.zoo.tiny_random import tiny_call_kwargs

        deep(**tiny_call_kwargs("flux", num_inference_steps=6))
        assert h.stats.skipped > 0
    sd3 = dc.space_of(dc.load_pipeline("random-tiny:sd3").pipe.transformer)
    with pytest.raises(dc.ScheduleError, match="another block count of its family"):
        s.to_space(sd3)


def test_schedule_transfer_cli(tmp_path, capsys):
    import dit_cache as dc
    from dit_cache.cli import main

    space = dc.space_of(dc.load_pipeline("random-tiny:pixart:4").pipe.transformer)
    dc.fora(space, 20, 2).save(tmp_path / "f.json")
    assert main(["schedule", "transfer", str(tmp_path / "f.json"), "--model", "random-tiny:pixart:6", "--steps", "10",
                 "-o", str(tmp_path / "t.json")]) == 0
    t = dc.Schedule.load(tmp_path / "t.json")
    assert t.steps == 10 and len(t.space.block_ids) == 6
    assert np.array_equal(t.compute, dc.fora(t.space, 10, 2).compute)  # FORA-2 stays FORA-2 at 6 blocks, 10 steps
    assert main(["schedule", "transfer", str(tmp_path / "f.json"), "-o", str(tmp_path / "u.json")]) == 2
    assert "nothing to transfer to" in capsys.readouterr().err
