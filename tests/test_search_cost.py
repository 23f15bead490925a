"""benchmarks/search_cost.py: the naive recount is checked against a real naive run; costs and factors add up."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("deap")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import search_cost  # noqa: E402


def test_search_cost_recounts_naive_exactly_and_reports_factors(tmp_path):
    out = tmp_path / "cost.json"
    search_cost.main(["--model", "random-tiny", "--steps", "6", "--generations", "2", "--ref-generations", "3",
                      "--population", "6", "--num-prompts", "4", "--batch-size", "2", "--seeds", "0",
                      "--variants", "defaults", "screen", "--workers", "1", "--verify-naive", "2",
                      "--runs", str(tmp_path / "runs"), "--out", str(out), "--plot", str(tmp_path / "p.png")])
    res = json.loads(out.read_text())
    assert res["naive_check"] == {"generations": 2, "fronts_equal": True, "block_evals_equal_recount": True}
    naive, dflt = res["runs"]["naive-s0"]["curve"], res["runs"]["defaults-s0"]["curve"]
    assert [h for _, h in naive] == [h for _, h in dflt]  # the same trajectory, priced differently
    assert all(n > d for (n, _), (d, _) in zip(naive, dflt))  # prefix sharing saves block evaluations
    hist = json.loads((tmp_path / "runs" / "random-tiny" / "defaults-s0" / "history.json").read_text())["history"]
    assert res["target_hypervolume"] == pytest.approx(0.995 * search_cost.curve(hist, (1.0, 75.0), 6)[-1][1])
    rows = {r["variant"]: r for r in res["summary"]}
    assert rows["naive"]["factor_vs_naive"] == ([1.0] if rows["naive"]["cost_to_target"][0] else [None])
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert "| screen |" in search_cost.table(res)
    with pytest.raises(SystemExit, match="other settings"):  # a run folder made with other settings is refused
        search_cost.main(["--model", "random-tiny", "--steps", "6", "--generations", "2", "--ref-generations", "3",
                          "--population", "8", "--num-prompts", "4", "--batch-size", "2", "--seeds", "0",
                          "--variants", "defaults", "--workers", "1", "--verify-naive", "0",
                          "--runs", str(tmp_path / "runs"), "--out", str(out), "--plot", str(tmp_path / "p.png")])


def test_mf_protocol_names_missing_result_files(tmp_path):
    (tmp_path / "search_shapes_history.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"search_shapes_history_mf\.json, search_validation_shapes\.json"):
        search_cost.mf_protocol(tmp_path)


def test_compile_bound_refuses_bad_arguments_before_measuring(monkeypatch, tmp_path, capsys):
    import compile_bound

    monkeypatch.setattr(compile_bound, "measure", lambda *a: pytest.fail("measured despite a bad argument"))
    (tmp_path / "a-file").write_text("")
    for argv in (["--repeats", "0"], ["--out", str(tmp_path / "a-file" / "y.json")], ["--out", str(tmp_path)]):
        monkeypatch.setattr(sys, "argv", ["compile_bound.py", *argv])
        with pytest.raises(SystemExit) as e:
            compile_bound.main()
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--repeats" in err and "a-file is a file" in err and "is a folder" in err
