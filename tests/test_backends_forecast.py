"""Forecast cells ('f') inside static schedules: format, backward compatibility, runtime equivalence to TaylorSeer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dit_cache as dc
from dit_cache import Schedule, ScheduleError, fora
from dit_cache.backends.taylorseer import TaylorSeerConfig
from dit_cache.zoo.tiny_random import build_tiny_pipeline, tiny_call_kwargs


def test_json_without_forecast_is_unchanged(pixart_space):
    s = fora(pixart_space, 8, 2)
    d = s.to_dict()
    assert set("".join(c for row in d["compute"] for c in row)) <= set("10-")
    assert s.forecast is None and not s.forecast_mask.any()
    assert Schedule.from_dict(json.loads(json.dumps(d))) == s


def test_forecast_round_trip_and_digest(pixart_space, tmp_path):
    s = fora(pixart_space, 8, 3)
    f = s.with_forecast()
    cells = f.to_dict()["compute"]
    assert cells[1][0] == "fff" and cells[3][0] == "111"
    assert f != s and f.digest() != s.digest()
    back = Schedule.load(f.save(tmp_path / "f.json"))
    assert back == f and np.array_equal(back.forecast_mask, ~s.compute)
    assert np.array_equal(f.resample(16).forecast_mask, ~f.resample(16).compute)
    only_ff = f.with_forecast(np.broadcast_to(np.array([False, False, True]), s.compute.shape))
    assert only_ff.to_dict()["compute"][1][0] == "00f"


def test_schema_v2_order_round_trip_and_v1_files(pixart_space, tmp_path):
    """v2 stores the Taylor order of 'f' cells; v1 files (no order: first order) read unchanged; cells round-trip."""
    s = fora(pixart_space, 8, 3)
    f2 = s.with_forecast(order=2)
    d = f2.to_dict()
    assert d["schema_version"] == 2 and d["forecast_order"] == 2
    back = Schedule.load(f2.save(tmp_path / "f2.json"))
    assert back == f2 and back.forecast_order == 2 and back != s.with_forecast()
    assert s.with_forecast().digest() == Schedule.from_dict({**s.with_forecast().to_dict(), "schema_version": 1}).digest()
    v1 = {k: v for k, v in s.with_forecast().to_dict().items() if k != "forecast_order"}
    v1["schema_version"] = 1
    old = Schedule.from_dict(v1)
    assert old.forecast_order == 1 and old == s.with_forecast()
    assert np.array_equal(Schedule.from_cells(f2.cells, pixart_space, {}, 2).cells, f2.cells)
    assert set(np.unique(f2.cells)) == {dc.COMPUTE, dc.FORECAST}
    ff = s.with_forecast(np.broadcast_to(np.array([False, False, True]), s.compute.shape), order=2)
    assert set(np.unique(ff.cells)) == {dc.REUSE, dc.COMPUTE, dc.FORECAST}
    assert Schedule.from_cells(ff.cells, pixart_space, dict(ff.metadata), 2) == ff
    with pytest.raises(ScheduleError, match="must say 'forecast_order'"):
        Schedule.from_dict({k: v for k, v in d.items() if k != "forecast_order"})
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ScheduleError, match="forecast_order must be an integer >= 0"):
            Schedule.from_dict({**d, "forecast_order": bad})
    with pytest.raises(ScheduleError, match="cells must be 0"):
        Schedule.from_cells(np.full(f2.cells.shape, 3), pixart_space)
    with pytest.raises(ScheduleError, match="reads versions 1, 2"):
        Schedule.from_dict({**d, "schema_version": 3})


def test_forecast_order_runs_in_the_static_backend():
    """Order 2 differs from order 1 once a cell has three computed outputs; order 0 equals plain reuse."""
    fam = "pixart"
    pipe = build_tiny_pipeline(fam)
    space = dc.space_of(pipe.transformer)
    def run(sched):
        with dc.accelerate(pipe, sched):
            return pipe(**tiny_call_kwargs(fam, 10, 0)).images

    s = fora(space, 10, 3)
    o0, o1, o2 = (run(s.with_forecast(order=o)) for o in (0, 1, 2))
    assert torch.equal(o0, run(s)) and not torch.equal(o1, o2) and not torch.equal(o1, o0)


def test_forecast_validation(pixart_space):
    s = fora(pixart_space, 4, 2)
    with pytest.raises(ScheduleError, match="forecast cells must be reuse cells"):
        Schedule(s.compute, s.space, {}, np.ones_like(s.compute))
    d = s.with_forecast().to_dict()
    d["compute"][0][0] = "f11"
    with pytest.raises(ScheduleError, match="step 0 reuses"):
        Schedule.from_dict(d)
    with pytest.warns(dc.ScheduleWarning):
        assert Schedule.from_dict(d, repair=True).compute[0].all()
    d["compute"][0][0] = "x11"
    with pytest.raises(ScheduleError, match="'1', '0', 'f' or '-'"):
        Schedule.from_dict(d)


@pytest.mark.parametrize("family", ("pixart", "flux"))
def test_forecast_schedule_equals_taylorseer_order1(family):
    """FORA-N with warm-up 1 and every reuse cell forecast is TaylorSeer(N, O=1, W=1), bit for bit."""
    pipe = build_tiny_pipeline(family)
    space = dc.space_of(pipe.transformer)
    sched = fora(space, 8, 3, warmup=1).with_forecast()

    def run():
        return pipe(**tiny_call_kwargs(family, 8, 0)).images

    with dc.accelerate(pipe, sched) as h:
        a = run()
        per_step = h.stats.computed.sum((1, 2)).tolist()
        # forecast cells keep two factors (y_j, slope) per component per branch, no plain reuse caches
        branches = 2 if family == "flux" else 1
        cells = [f for b in h.backend.state.factors.values() for f in b.values()]
        assert len(cells) == int(space.applicable.sum()) * branches
        assert h.backend.cache_bytes() == sum(2 * f.nbytes() // len(f.factors) for f in cells)
        snap = h.snapshot()
        assert snap["backend"]["factors"]
    with dc.accelerate(pipe, TaylorSeerConfig(interval=3, order=1, warmup=1)) as h2:
        b = run()
        assert h2.stats.computed.sum((1, 2)).tolist() == per_step
    with dc.accelerate(pipe, fora(space, 8, 3, warmup=1)):
        c = run()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # forecasting differs from plain reuse
