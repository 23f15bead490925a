"""Search: faithful loop, exact prefix sharing, fitness cache, determinism, resume after SIGKILL, workers."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dit_cache as dc

pytest.importorskip("deap")

from search.evaluator import Evaluator
from search.genome import crossover, decode, encode, evolvable, heuristic_seeds, mutate
from search.nsga import Search, SearchConfig, SearchError, hypervolume, pareto, read_prompts
from search.objectives import ObjectiveUnavailable, make_objective
from search.prefix import StateCache

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a red circle on black", "two blue squares", "a photo of a cat", "a green cross, small"]
STEPS = 6


@pytest.fixture(scope="module")
def pipe():
    from search.workers import load_model

    return load_model("random-tiny")


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    p = tmp_path / "prompts.txt"
    p.write_text("\n".join(PROMPTS) + "\n")
    return p


def _schedules(space, steps):
    """Schedules with long shared prefixes, short ones, and none."""
    a = dc.random_schedule(space, steps, 0.5, seed=1)
    b = a.compute.copy()
    b[steps - 2:] = ~b[steps - 2:] & space.applicable | ~space.applicable  # same prefix up to steps-3
    c = a.compute.copy()
    c[2] = True
    return [a, dc.Schedule(b, space), dc.Schedule(c, space), dc.fora(space, steps, 2), dc.fora(space, steps, 3),
            dc.random_schedule(space, steps, 0.7, seed=2), dc.compute_all(space, steps)]


def _pipe_latents(pipe, ev: Evaluator, schedule) -> torch.Tensor:
    """Naive evaluation through the real pipeline and the runtime's static backend."""
    outs = []
    for loop in ev.loops:
        with dc.accelerate(pipe.transformer, schedule):
            outs.append(pipe(**loop.call_kwargs()).images)
    return torch.cat(outs)


def test_loop_reproduces_pipeline_bit_for_bit(pipe):
    from search.loops import PixArtLoop

    loop = PixArtLoop(pipe, PROMPTS[:3], [5, 6, 7], STEPS)
    ours = loop.run()
    ref = pipe(**loop.call_kwargs()).images
    assert ours.shape == ref.shape == (3, 4, 8, 8)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("budget,spill", [(2 << 30, False), (300_000, False), (300_000, True)])
def test_prefix_sharing_is_bit_identical_to_naive(pipe, budget, spill, tmp_path):
    """Everything fits / a few states fit (LRU evicts) / evicted states spill to disk and come back."""
    ev = Evaluator(pipe, PROMPTS[:3], [0, 1, 2], STEPS, batch_size=2, budget_bytes=budget,
                   spill_dir=str(tmp_path / "spill") if spill else None, spill_bytes=1 << 30)
    scheds = _schedules(ev.space, STEPS)
    try:
        shared = ev.evaluate(scheds)
        first = ev.counts.steps_run
        again = ev.evaluate(scheds[::-1])[::-1]  # second round: states from the first round are reused
        counts, evictions, loads = ev.counts, ev.cache.evictions, ev.cache.loads
        files = list((tmp_path / "spill").glob("*.safetensors"))
    finally:
        ev.close()
    assert (len(files) > 0 and loads > 0) if spill else (files == [] and loads == 0)
    assert not list((tmp_path / "spill").glob("*.safetensors"))  # close() deletes spilled states
    naive = Evaluator(pipe, PROMPTS[:3], [0, 1, 2], STEPS, batch_size=2, prefix_sharing=False)
    try:
        plain = naive.evaluate(scheds)
        assert naive.counts.steps_run == naive.counts.steps_naive == len(scheds) * STEPS * 2
    finally:
        naive.close()
    for s, x, y, z in zip(scheds, shared, again, plain):
        ref = _pipe_latents(pipe, naive, s)
        assert torch.equal(x, ref), s.name
        assert torch.equal(y, ref), s.name
        assert torch.equal(z, ref), s.name
    assert counts.steps_naive == 2 * len(scheds) * STEPS * 2
    assert counts.steps_run < counts.steps_naive
    if budget > 1 << 20:  # everything fits: the second round only runs the last step of each candidate
        assert counts.steps_run - first == len(scheds) * 2 and evictions == 0
        assert counts.block_evals_naive / counts.block_evals > 1.5
    else:
        assert evictions > 0
    SPILL_RUNS[spill or budget > 1 << 20] = counts.steps_run


SPILL_RUNS: dict[bool, int] = {}


def test_spilling_saves_steps_under_the_same_budget():
    """Same small memory budget: reloading spilled states runs fewer transformer steps than dropping them."""
    if len(SPILL_RUNS) < 2:
        pytest.skip("needs the parametrized bit-identity runs")
    assert SPILL_RUNS[True] < SPILL_RUNS[False]


def test_state_cache_spills_and_reloads_exactly(tmp_path):
    from search.loops import LoopState

    big = torch.randn(1000)
    st = LoopState(3, torch.randn(2, 4), {"hist": [big, big[:10]], "n": 2}, [torch.arange(5, dtype=torch.uint8)],
                   {"backend": {0: {(0, 0): big}}, "step": 3})
    cache = StateCache(budget_bytes=1, spill_dir=tmp_path, spill_bytes=1 << 20)
    cache.put((0, "a"), st)
    cache.put((0, "b"), LoopState(0, torch.zeros(10), None, [], None))  # evicts "a" to disk
    assert cache.spills == 1 and (0, "a") not in cache.states and len(list(tmp_path.glob("*.safetensors"))) == 1
    back = cache.longest(0, ["a", "zz"], 2)
    assert cache.loads == 1 and back is not st and back.step == 3
    assert torch.equal(back.latents, st.latents) and torch.equal(back.cache["backend"][0][(0, 0)], big)
    assert back.scheduler["hist"][0] is back.cache["backend"][0][(0, 0)]  # shared tensors stay shared
    assert torch.equal(back.scheduler["hist"][1], big[:10]) and back.generator_states[0].dtype == torch.uint8
    tiny = StateCache(budget_bytes=1, spill_dir=tmp_path / "t", spill_bytes=10)  # disk budget: oldest file goes
    tiny.put((0, "a"), st)
    tiny.put((0, "b"), LoopState(0, torch.zeros(10), None, [], None))
    assert tiny.disk_bytes == 0 and not list((tmp_path / "t").glob("*"))


def test_state_cache_lru_and_byte_accounting():
    from search.loops import LoopState

    def state(n: int) -> LoopState:
        return LoopState(0, torch.zeros(n), None, [], {"backend": {0: {(0, 0): torch.zeros(n)}}})

    shared = torch.ones(1000)
    cache = StateCache(budget_bytes=2 * 2 * 4000 + 4000)
    for i in range(5):
        s = state(1000)
        s.cache["backend"][0][(1, 1)] = shared  # counted once across states
        cache.put((0, f"k{i}"), s)
    assert cache.evictions == 3 and list(cache.states) == [(0, "k3"), (0, "k4")]
    assert cache.bytes == 2 * 2 * 4000 + 4000
    assert cache.get((0, "k0")) is None and cache.get((0, "k4")) is not None
    cache.clear()
    assert cache.bytes == 0
    # pinned states (the parents' prefixes) go only after every unpinned one
    cache = StateCache(budget_bytes=3 * 2 * 4000)
    cache.pin({(0, "p0"), (0, "p1")})
    for k in ("p0", "p1", "x0", "x1", "x2"):
        cache.put((0, k), state(1000))
    assert list(cache.states) == [(0, "p0"), (0, "p1"), (0, "x2")]


def test_operators_and_codec(pixart_space):
    import random

    mask = evolvable(pixart_space, 8)
    assert not mask[0].any() and mask[1:].all()
    rng = random.Random(0)
    a = np.ones((8, 4, 3), bool)
    b = np.zeros((8, 4, 3), bool)
    b[0] = True
    c1, c2 = crossover(rng, a, b, 4)
    assert np.array_equal(c1 | c2, a) and not (c1 & c2)[1:].any()  # whole rows swapped
    assert all(c1[i].all() or not c1[i].any() for i in range(8))
    m = mutate(rng, a, mask, 0.5)
    assert m[0].all() and (~m).any()
    assert np.array_equal(decode(encode(m), m.shape), m)
    names = [s.name for s in heuristic_seeds(pixart_space, 8)]
    assert names[0] == "compute-all" and {"fora-2", "fora-6", "delta-dit-2", "cache-ff-2"} <= set(names)


def test_late_bias_moves_variation_to_late_steps(pixart_space):
    import random

    from search.genome import step_weights

    w = step_weights(10, 4.0)
    assert w[0] == 0 and np.all(np.diff(w[1:]) > 0) and w[1:].mean() == pytest.approx(1.0)
    assert np.allclose(step_weights(10, 0.0)[1:], 1.0)
    mask = evolvable(pixart_space, 10)
    rng = random.Random(1)
    flips = sum((~mutate(rng, np.ones((10, 4, 3), bool), mask, 0.05, late_bias=4.0)).sum((1, 2)) for _ in range(200))
    assert flips[0] == 0 and flips[1:5].sum() < flips[5:].sum() / 5
    firsts = [min(i for i in range(1, 10) if not np.array_equal(c[i], np.ones((4, 3), bool)))
              for c in (crossover(rng, np.ones((10, 4, 3), bool), np.zeros((10, 4, 3), bool), 2, 4.0)[0]
                        for _ in range(200))]
    assert np.mean(firsts) > 5  # first cut late: children keep long parent prefixes


def test_hypervolume_and_pareto():
    assert hypervolume([(0.5, 0.5)], (1.0, 1.0)) == pytest.approx(0.25)
    assert hypervolume([(0.5, 0.5), (0.25, 0.75), (0.6, 0.6)], (1.0, 1.0)) == pytest.approx(0.25 + 0.25 * 0.25)
    assert pareto([(1, 0), (0.5, 0.5), (0.6, 0.6), (0.5, 0.5), (0.2, 1)]) == [0, 1, 4]


def _cfg(prompts_file: Path, **kw) -> SearchConfig:
    base = {"model": "random-tiny", "prompts": str(prompts_file), "population": 8, "generations": 3,
            "steps": STEPS, "seed": 3, "batch_size": 2}
    return SearchConfig(**{**base, **kw})


def _run(pipe, cfg, out, **kw):
    s = Search(cfg, out, pipe=pipe)
    try:
        return s.run(progress=False, **kw), s
    finally:
        s.close()


def _front(summary):
    return [(r["macs_speedup"], r["quality"]) for r in summary["front"]], [
        json.loads(Path(summary["_out"], r["file"]).read_text())["compute"] for r in summary["front"]]


@pytest.fixture(scope="module")
def baseline(pipe, tmp_path_factory):
    """One uninterrupted run (seed 3), shared by several tests."""
    d = tmp_path_factory.mktemp("base")
    pf = d / "prompts.txt"
    pf.write_text("\n".join(PROMPTS) + "\n")
    summary, s = _run(pipe, _cfg(pf), d / "run")
    summary["_out"] = str(d / "run")
    return summary, pf, s


def test_outputs_objectives_direction_and_fitness_cache(baseline):
    summary, _, s = baseline
    out = Path(summary["_out"])
    assert (out / "front.png").stat().st_size > 1000
    hist = json.loads((out / "history.json").read_text())
    assert [h["generation"] for h in hist["history"]] == [0, 1, 2, 3]
    assert all(np.isfinite(h["hypervolume"]) for h in hist["history"])
    assert hist["history"][-1]["hypervolume"] >= hist["history"][0]["hypervolume"]  # elitist: never worse
    # every front file is a loadable schedule carrying its objectives and MACs
    fits = []
    for r in summary["front"]:
        sch = dc.Schedule.load(out / r["file"])
        assert sch.metadata["macs"] == s._cost_ev.macs(sch)
        fits.append((sch.metadata["macs"], sch.metadata["objectives"]["quality_loss"]))
    # objectives' direction: compute-all has the highest MACs and the best (zero) fidelity loss
    full = dc.compute_all(s.space, STEPS)
    assert max(f[0] for f in fits) == s.full_macs == s._cost_ev.macs(full)
    assert min(f[1] for f in fits) == 0.0
    for f in s.state.fitness.values():
        assert f["macs"] <= s.full_macs and f["quality"] >= 0.0
        if f["macs"] < s.full_macs * 0.9:
            assert f["quality"] > 0.0
    fora2 = s.state.fitness[s._ind_key(dc.fora(s.space, STEPS, 2).compute)]
    assert fora2["macs"] < s.full_macs and fora2["quality"] > 0
    # fitness cache: no schedule generated twice (compute-all = the reference run, not generated again)
    assert s.pool.counts.candidates == len(s.state.fitness)
    assert summary["evaluations"] == len(s.state.fitness)
    assert hist["history"][-1]["block_evals"] < hist["history"][-1]["block_evals_naive"]


def test_fitness_cache_hits_do_not_regenerate(pipe, prompts_file, tmp_path):
    from search.nsga import _Ind

    s = Search(_cfg(prompts_file), tmp_path / "r", pipe=pipe)
    try:
        s.reference = s._references()
        assert s.pool.counts.candidates == 1  # the uncached reference
        inds = [_Ind(np.array(sc.compute)) for sc in heuristic_seeds(s.space, STEPS)[:5]]
        s.evaluate(inds)
        spent = s.pool.counts.candidates
        assert spent == 6 and s.state.cache_hits == 0
        twins = [_Ind(i.genome.copy()) for i in inds]
        s.evaluate(twins)
        assert s.pool.counts.candidates == spent and s.state.cache_hits == 5
        assert [t.fitness.values for t in twins] == [i.fitness.values for i in inds]
    finally:
        s.close()


def test_determinism_for_a_seed(pipe, baseline, tmp_path):
    summary, pf, _ = baseline
    again, _ = _run(pipe, _cfg(pf), tmp_path / "again")
    again["_out"] = str(tmp_path / "again")
    assert _front(again) == _front(summary)
    strip = [{k: v for k, v in h.items() if k != "wall_s"} for h in summary["history"]]
    assert [{k: v for k, v in h.items() if k != "wall_s"} for h in again["history"]] == strip


# The search CLI in a subprocess that SIGKILLs itself right after writing a generation's checkpoint (the test
# wraps Search._save; nothing in the shipped code knows about it). It writes its worker pids first.
_KILLER = """
import json, os, signal, sys
from search import cli, nsga
after, pids = int(sys.argv[1]), sys.argv[2]
orig = nsga.Search._save
def save(self, pop):
    orig(self, pop)
    if self.state.generation == after:
        exe = getattr(self.pool, "exe", None)
        with open(pids, "w") as f:
            json.dump(list(getattr(exe, "_processes", None) or {}), f)
        os.kill(os.getpid(), signal.SIGKILL)
nsga.Search._save = save
sys.exit(cli.main(sys.argv[3:]))
"""


def _killed_search(pf: Path, out: Path, after_generation: int, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", _KILLER, str(after_generation), str(out.parent / f"{out.name}.pids"),
           "--model", "random-tiny", "--prompts", str(pf), "--population", "8", "--generations", "3",
           "--steps", str(STEPS), "--seed", "3", "--batch-size", "2", "--out", str(out), "--quiet", *extra]
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=180)


def test_workers_exit_when_the_search_is_killed(baseline, tmp_path):
    """SIGKILL of the main search process: its worker processes exit too (they used to live on, ~0.9 GB each)."""
    import time

    _, pf, _ = baseline
    proc = _killed_search(pf, tmp_path / "wk", 0, "--workers", "2")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    pids = json.loads((tmp_path / "wk.pids").read_text())
    assert len(pids) == 2

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()

    deadline = time.monotonic() + 30
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in pids)


def test_resume_refuses_changed_prompts_and_two_runs_share_no_out(pipe, prompts_file, tmp_path):
    out = tmp_path / "r"
    _run(pipe, _cfg(prompts_file, generations=1), out)
    prompts_file.write_text("\n".join(["a yellow star", *PROMPTS[1:]]) + "\n")  # same path, other content
    with pytest.raises(SearchError, match=r"calibration prompts .* differ .*the file changed"):
        _run(pipe, _cfg(prompts_file, generations=2), out, resume=True)
    first = Search(_cfg(prompts_file), tmp_path / "busy", pipe=pipe)
    try:
        with pytest.raises(SearchError, match=r"another run is writing into .*busy"):
            Search(_cfg(prompts_file), tmp_path / "busy", pipe=pipe)
    finally:
        first.close()
    Search(_cfg(prompts_file), tmp_path / "busy", pipe=pipe).close()  # free again after close()


def test_resume_after_sigkill_equals_uninterrupted(pipe, baseline, tmp_path):
    summary, pf, _ = baseline
    out = tmp_path / "killed"
    proc = _killed_search(pf, out, after_generation=1)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpt = json.loads((out / "checkpoint.json").read_text())
    assert ckpt["generation"] == 1 and not (out / "history.json").exists()
    with pytest.raises(SearchError, match="--resume"):
        _run(pipe, _cfg(pf), out)
    resumed, _ = _run(pipe, _cfg(pf), out, resume=True)
    resumed["_out"] = str(out)
    assert _front(resumed) == _front(summary)
    assert [h["hypervolume"] for h in resumed["history"]] == [h["hypervolume"] for h in summary["history"]]
    assert resumed["evaluations"] == summary["evaluations"]


def test_two_workers_equal_one(pipe, baseline, tmp_path):
    """Also with disk spill on: stale spill files of a killed run are removed, and none outlive the run."""
    summary, pf, _ = baseline
    stale = tmp_path / "w2" / "prefix_spill" / "pid1"
    stale.mkdir(parents=True)
    (stale / "b0_old.safetensors").write_bytes(b"x" * 100)
    two, s = _run(pipe, _cfg(pf, workers=2, spill_mb=64, memory_budget_mb=1), tmp_path / "w2")
    assert not (tmp_path / "w2" / "prefix_spill").exists()
    two["_out"] = str(tmp_path / "w2")
    assert type(s.pool).__name__ == "ProcessPool"
    assert _front(two) == _front(summary)
    assert [h["hypervolume"] for h in two["history"]] == [h["hypervolume"] for h in summary["history"]]
    assert two["evaluations"] == summary["evaluations"]


def test_accelerate_launch_two_processes_equals_one(baseline, tmp_path):
    """`accelerate launch --num_processes 2 -m search --backend accelerate` ends with the in-process run's front."""
    summary, pf, _ = baseline
    out = tmp_path / "acc"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--cpu", "-m", "search", "--model", "random-tiny",
           "--prompts", str(pf), "--population", "8", "--generations", "3", "--steps", str(STEPS), "--seed", "3",
           "--batch-size", "2", "--backend", "accelerate", "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("front (") == 1  # only the main process reports
    two = json.loads((out / "history.json").read_text())
    two["_out"] = str(out)
    assert _front(two) == _front(summary)
    assert [h["hypervolume"] for h in two["history"]] == [h["hypervolume"] for h in summary["history"]]
    assert two["evaluations"] == summary["evaluations"] and two["block_evals"] == summary["block_evals"]


def test_ray_backend_equals_in_process(pipe):
    pytest.importorskip("ray")
    from search.workers import EvalSpec, make_pool

    scheds = _schedules(dc.space_of(pipe.transformer), STEPS)
    spec = EvalSpec("random-tiny", tuple(PROMPTS[:2]), (0, 1), STEPS)
    local = make_pool(spec, 1, pipe=pipe)
    try:
        a = local.evaluate([s.compute for s in scheds])
    finally:
        local.close()
    ray_pool = make_pool(spec, 2, backend="ray", pipe=pipe)
    try:
        b = ray_pool.evaluate([s.compute for s in scheds])
    finally:
        ray_pool.close()
    assert all(torch.equal(x, y) for x, y in zip(a, b))


# -- clear errors --------------------------------------------------------------------------------
def test_prompts_file_missing_or_empty(tmp_path):
    with pytest.raises(SearchError, match="not found"):
        read_prompts(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(SearchError, match="no prompts"):
        read_prompts(empty)


def test_schedule_space_mismatch(pipe, prompts_file, tmp_path, flux_space, pixart_space):
    s = Search(_cfg(prompts_file), tmp_path / "r", pipe=pipe)
    try:
        with pytest.raises(SearchError, match="family 'flux'"):
            s.check_schedule(dc.fora(flux_space, STEPS, 2))
        with pytest.raises(SearchError, match="steps"):
            s.check_schedule(dc.fora(s.space, STEPS + 2, 2))
        bad = tmp_path / "flux.json"
        dc.fora(flux_space, STEPS, 2).save(bad)
        with pytest.raises(SearchError, match=r"does not fit"):
            Search(_cfg(prompts_file, init=[str(bad)]), tmp_path / "r2", pipe=pipe)
        with pytest.raises(SearchError, match="not found"):
            Search(_cfg(prompts_file, init=[str(tmp_path / "nope.json")]), tmp_path / "r3", pipe=pipe)
        wider = dc.ScheduleSpace("pixart", tuple(str(i) for i in range(6)), pixart_space.components, np.ones((6, 3), bool))
        with pytest.raises(dc.ScheduleError, match="6 blocks"):
            s._cost_ev.check(dc.fora(wider, STEPS, 2))
    finally:
        s.close()
    good = tmp_path / "mine.json"  # a matching --init schedule seeds the population (after compute-all)
    dc.random_schedule(s.space, STEPS, 0.4, seed=9).save(good)
    s2 = Search(_cfg(prompts_file, init=[str(good)]), tmp_path / "r4", pipe=pipe)
    s2.close()
    assert np.array_equal(s2.initial_population()[1].genome, dc.Schedule.load(good).compute)


def test_unavailable_objectives_and_bad_settings(pipe, prompts_file):
    with pytest.raises(ObjectiveUnavailable, match="--clip-weights"):
        make_objective("clip", pipe, PROMPTS)
    if not _has("ImageReward"):
        with pytest.raises(ObjectiveUnavailable, match="image-reward"):
            make_objective("imagereward", pipe, PROMPTS)
    with pytest.raises(ObjectiveUnavailable):  # not shapes captions (or no scorer weights yet)
        make_objective("adherence", pipe, ["a photo of a cat"])
    with pytest.raises(ValueError, match="unknown objective"):
        make_objective("fid", pipe, PROMPTS)
    with pytest.raises(SearchError, match="forecast-order"):
        _cfg(prompts_file, forecast=True, forecast_order=-1).check()
    with pytest.raises(SearchError, match="population"):
        _cfg(prompts_file, population=2).check()


def test_cli_registers_search_and_reports_errors(tmp_path, capsys):
    from dit_cache.cli import main

    rc = main(["search", "--model", "random-tiny", "--prompts", str(tmp_path / "missing.txt"), "--out", str(tmp_path)])
    assert rc == 2
    assert "prompts file not found" in capsys.readouterr().err


def test_calibration_prompt_sets():
    general = read_prompts(ROOT / "calib_prompts" / "general_100.txt")
    assert len(general) == len(set(general)) == 100
    shapes = read_prompts(ROOT / "calib_prompts" / "shapes_calib.txt")
    from training.shapes import caption_split, parse_caption

    assert len(shapes) == len(set(shapes)) >= 32
    assert all(caption_split(p) in ("train", "val") for p in shapes)  # never held-out prompts
    for p in shapes:
        parse_caption(p)


def _has(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def test_validate_front_against_baselines(pipe, baseline):
    from search.validate import dominates, to_markdown, validate

    summary, _, search = baseline
    res = validate(Path(summary["_out"]), "random-tiny", PROMPTS[:2], [100, 101], dynamic=False, pipe=pipe,
                   shapes=False)
    rows = {r["variant"]: r for r in res["rows"]}
    assert rows["uncached"]["latent_mse"] == 0.0 and rows["uncached"]["macs_speedup"] == 1.0
    fora2 = search._cost_ev.macs(dc.fora(search.space, STEPS, 2))
    assert rows["fora-2"]["macs_speedup"] == pytest.approx(search.full_macs / fora2, rel=1e-9)
    assert rows["fora-2"]["latent_mse"] > 0
    front_rows = [r for r in res["rows"] if r["kind"] == "front"]
    assert len(front_rows) == len(summary["front"])
    for r, f in zip(front_rows, summary["front"]):  # the runtime's MAC counters agree with the search's
        assert r["macs_speedup"] == pytest.approx(f["macs_speedup"], rel=1e-9)
    assert set(res["verdicts"]["dominated"]) == {"fora-2", "fora-3", "fora-4"}
    assert "| fora-3 | fora |" in to_markdown(res)
    a = {"macs_speedup": 2.0, "latent_mse": 0.1, "adherence": 0.9}
    assert dominates(a, {"macs_speedup": 2.0, "latent_mse": 0.2, "adherence": 0.9}, ["latent_mse", "adherence"])
    assert not dominates(a, {"macs_speedup": 2.1, "latent_mse": 0.2, "adherence": 0.95}, ["latent_mse"])
    assert not dominates(a, dict(a), ["latent_mse", "adherence"])


def test_multi_fidelity_skips_dominated_children_and_keeps_the_front_exact(pipe, baseline, tmp_path):
    _, pf, _ = baseline
    mf, s = _run(pipe, _cfg(pf, multi_fidelity=True, generations=4, population=12), tmp_path / "mf")
    fit = s.state.fitness
    partial = [f for f in fit.values() if f.get("partial")]
    full = [f for f in fit.values() if not f.get("partial")]
    assert partial, "some children should stop after the first prompt batch"
    for f in partial:  # the documented rule
        assert any(g["macs"] <= f["macs"] and 1.1 * g["quality_sub"] < f["quality_sub"] for g in full)
    keys = {r["file"]: json.loads((tmp_path / "mf" / r["file"]).read_text())["metadata"]["search"]["key"]
            for r in mf["front"]}
    assert all(not fit[k].get("partial") for k in keys.values())  # the written front is fully evaluated
    assert mf["history"][-1]["partial"] == len(partial)
    with pytest.raises(SearchError, match="more prompts"):
        Search(_cfg(pf, multi_fidelity=True, batch_size=8), tmp_path / "x", pipe=pipe)


def test_forecast_cells_prefix_sharing_exact_and_order0_equals_reuse(pipe):
    import random

    from search.genome import as_mixed, random_genome

    space = dc.space_of(pipe.transformer)
    mask = evolvable(space, STEPS)
    rng = random.Random(4)
    genomes = [random_genome(rng, mask, mixed=True) for _ in range(3)]
    g = genomes[0].copy()
    g[STEPS - 1][g[STEPS - 1] == 2] = 0  # same prefix as genomes[0], last step reuses instead
    genomes += [g, as_mixed(dc.fora(space, STEPS, 2).compute, forecast=True)]
    assert all((x == 2).any() for x in genomes)
    ev = Evaluator(pipe, PROMPTS[:2], [0, 1], STEPS, forecast_order=1)
    try:
        shared = ev.evaluate(genomes)
        assert ev.counts.steps_run < ev.counts.steps_naive
    finally:
        ev.close()
    sched = lambda x, order=1: dc.Schedule.from_cells(x, space, {}, order)  # noqa: E731
    for x, lat in zip(genomes, shared):  # naive: the real pipeline under the runtime's static backend
        with dc.accelerate(pipe, sched(x)):
            ref = pipe(**ev.loops[0].call_kwargs()).images
        assert torch.equal(lat, ref)
        with dc.accelerate(pipe, dc.Schedule(x == 1, space)):  # plain reuse in the forecast cells gives another result
            assert not torch.equal(pipe(**ev.loops[0].call_kwargs()).images, lat)
        with dc.accelerate(pipe, sched(x, 0)):  # order 0 forecast == reuse
            zero = pipe(**ev.loops[0].call_kwargs()).images
        with dc.accelerate(pipe, dc.Schedule(x == 1, space)):
            assert torch.equal(zero, pipe(**ev.loops[0].call_kwargs()).images)
    assert np.array_equal(decode(encode(genomes[0]), genomes[0].shape), genomes[0])


@pytest.fixture(scope="module")
def forecast_run(pipe, tmp_path_factory):
    """A --forecast search (order 2) and its front files with forecast cells."""
    out = tmp_path_factory.mktemp("fc")
    pf = out / "prompts.txt"
    pf.write_text("\n".join(PROMPTS) + "\n")
    summary, s = _run(pipe, _cfg(pf, forecast=True, forecast_order=2, generations=2, seed=0), out / "run")
    assert any(f["genome"].startswith("m:") for f in s.state.fitness.values())
    files = [out / "run" / r["file"] for r in summary["front"]]
    mixed = [f for f in files if "f" in "".join(c for step in json.loads(f.read_text())["compute"] for c in step)]
    assert mixed, "a forecast search writes forecast ('f') cells into its front files"
    return out, pf, mixed


def _loop(pipe, prompts, seeds):
    """The search's loop for `prompts`: the call defaults of --model random-tiny, as `pipe(...)` and eval use."""
    from search.loops import make_loop

    return make_loop(pipe, prompts, seeds, STEPS, dc.resolve.call_defaults("random-tiny", pipe))


def _latents_under(pipe, path, prompts, seeds):
    """Final latents of `prompts` (one seed each) with the schedule file installed by `dc.accelerate`, and MACs/image."""

    loop = _loop(pipe, prompts, seeds)
    with dc.accelerate(pipe, str(path)) as h:
        lat = pipe(**loop.call_kwargs()).images
        macs = h.stats.macs()["executed"] / len(prompts)
    return lat, macs


def test_forecast_front_file_runs_as_the_search_measured_it(pipe, forecast_run):
    """A --forecast front file through `dc.accelerate(pipe, path)` gives exactly the search's quality and MACs."""
    from search.objectives import make_objective

    _, _, mixed = forecast_run
    seeds = list(range(len(PROMPTS)))  # --seed 0: the search's per-prompt seeds are 0..N-1
    ref = pipe(**_loop(pipe, PROMPTS, seeds).call_kwargs()).images
    objective = make_objective("fidelity", pipe, PROMPTS)
    differs = []
    for path in mixed:
        meta = json.loads(path.read_text())
        assert meta["schema_version"] == 2 and meta["forecast_order"] == 2 and "forecast_cells" not in meta["metadata"]
        lat, macs = _latents_under(pipe, path, PROMPTS, seeds)
        assert objective(lat, ref)["quality"] == meta["metadata"]["objectives"]["quality_loss"]
        assert macs == meta["metadata"]["macs"]
        plain = dc.Schedule.load(path)
        with dc.accelerate(pipe, dc.Schedule(plain.compute, plain.space)):  # the same cells run as plain reuse
            differs.append(not torch.equal(pipe(**_loop(pipe, PROMPTS, seeds).call_kwargs()).images, lat))
    assert any(differs)  # (a forecast cell with a single computed output before it forecasts exactly its reuse value)


def test_forecast_front_file_through_dit_cache_eval(pipe, forecast_run, tmp_path):
    """`dit-cache eval --schedules FRONT.json` runs the forecast cells: the search's MACs, and the latents the
    search scored (so its quality loss, recomputed from eval's samples, is the file's to the bit)."""
    from dit_cache.cli import main
    from eval.generate import load_sample
    from search.objectives import make_objective

    _, pf, mixed = forecast_run
    objective = make_objective("fidelity", pipe, PROMPTS)
    for path in mixed[:2]:
        meta = json.loads(path.read_text())["metadata"]
        out = tmp_path / path.stem
        argv = ["eval", "--model", "random-tiny", "--steps", str(STEPS), "--prompts", str(pf), "--num-prompts",
                str(len(PROMPTS)), "--schedules", str(path), "--metrics", "fidelity", "--batch-size", "2",
                "--out", str(out), "--quiet"]
        assert main(argv) == 0
        report = json.loads((out / "report.json").read_text())
        row = next(r for r in report["rows"] if r["variant"] == meta["name"])
        assert row["macs_per_image"] == meta["macs"]

        lat = {v: torch.stack([load_sample(out, v, f"p{i:05d}-s0")[1] for i in range(len(PROMPTS))])
               for v in (meta["name"], "uncached")}
        assert objective(lat[meta["name"]], lat["uncached"])["quality"] == meta["objectives"]["quality_loss"]


def test_old_format_forecast_front_is_migrated_with_identical_numbers(pipe, forecast_run, tmp_path):
    """Schema-1 front files of the old --forecast search (cells in metadata['forecast_cells']) run unchanged."""
    _, _, mixed = forecast_run
    new = json.loads(mixed[0].read_text())
    cells = [["".join("1" if ch == "f" else "0" for ch in blk) for blk in step] for step in new["compute"]]
    old = {**new, "schema_version": 1, "compute": [[blk.replace("f", "0") for blk in step] for step in new["compute"]],
           "metadata": {**new["metadata"], "forecast_cells": cells, "forecast_order": 2}}
    del old["forecast_order"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    migrated = dc.Schedule.load(path)
    assert migrated.forecast_order == 2 and np.array_equal(migrated.cells, dc.Schedule.load(mixed[0]).cells)
    seeds = list(range(len(PROMPTS)))
    lat_old, macs_old = _latents_under(pipe, path, PROMPTS, seeds)
    lat_new, macs_new = _latents_under(pipe, mixed[0], PROMPTS, seeds)
    assert torch.equal(lat_old, lat_new) and macs_old == macs_new == new["metadata"]["macs"]
    for bad, match in [({"forecast_cells": cells[:-1]}, "does not match the schedule"),
                       ({"forecast_cells": [["1" * len(b) for b in step] for step in cells]}, "marks computed cells"),
                       ({"forecast_order": -1}, "forecast_order"), ({"forecast_order": "2"}, "forecast_order")]:
        path.write_text(json.dumps({**old, "metadata": {**old["metadata"], **bad}}))
        with pytest.raises(dc.ScheduleError, match=match):
            dc.accelerate(pipe, str(path))
    path.write_text(json.dumps({**new, "metadata": {**new["metadata"], "forecast_cells": cells}}))
    with pytest.raises(dc.ScheduleError, match="schema_version 2 files mark forecast cells with 'f'"):
        dc.Schedule.load(path)


def test_forecast_seed_must_match_the_search_encoding(pipe, prompts_file, tmp_path):
    space = dc.space_of(pipe.transformer)
    f = dc.fora(space, STEPS, 3).with_forecast().save(tmp_path / "f.json")
    with pytest.raises(SearchError, match="has forecast cells: search with --forecast"):
        Search(_cfg(prompts_file, init=[str(f)]), tmp_path / "a", pipe=pipe)
    with pytest.raises(SearchError, match="order 1 but the search runs --forecast-order 2"):
        Search(_cfg(prompts_file, init=[str(f)], forecast=True, forecast_order=2), tmp_path / "b", pipe=pipe)


def test_adherence_objective_and_validation_on_the_embedded_model(tmp_path):
    """Adherence = mean attribute accuracy of the shapes scorer, the same number in the objective and validate."""
    from dit_cache.zoo import load
    from eval.fidelity import decode_latents
    from eval.shapes_scorer import adherence
    from search.validate import heldout_prompts, validate

    tiny = load()
    tiny.set_progress_bar_config(disable=True)
    prompts = heldout_prompts(3)
    space = dc.space_of(tiny.transformer)
    (tmp_path / "front").mkdir()
    dc.fora(space, 6, 3).save(tmp_path / "front" / "front_00.json")
    res = validate(tmp_path, "tiny", prompts, [7, 8, 9], dynamic=False, pipe=tiny)
    rows = {r["variant"]: r for r in res["rows"]}
    assert res["verdicts"]["metrics"] == ["psnr_db", "adherence"]
    assert set(res["verdicts"]["by_rule"]) == {"psnr", "latent_psnr", "latent_mse", "psnr, adherence within noise"}
    assert "fast_and_adherent" in res["verdicts"]
    assert len(rows["fora-3"]["adherence_per_prompt"]) == 3
    assert sum(rows["fora-3"]["adherence_per_prompt"]) / 3 == pytest.approx(rows["fora-3"]["adherence"])
    from search.validate import generate

    lat, _ = generate(tiny, prompts, [7, 8, 9], 6)
    u8 = (decode_latents(tiny, lat).clamp(0, 1) * 255).round().to(torch.uint8)
    direct = adherence(u8, prompts)
    mean_attr = sum(direct[k] for k in ("color", "shape", "size", "position")) / 4
    assert rows["uncached"]["adherence"] == pytest.approx(mean_attr)
    assert rows["uncached"]["all_correct"] == pytest.approx(direct["all_correct"])
    obj = make_objective("adherence", tiny, prompts)
    q = obj(lat, lat)
    assert q["adherence"] == pytest.approx(mean_attr) and q["quality"] == pytest.approx(1 - mean_attr)
    assert q["latent_mse"] == 0.0


def test_validate_dynamic_sweep_profiles_on_calibration_prompts(pipe, baseline):
    """The sweep runs every dynamic backend at several points; TeaCache/ERTACache profiles come from calib prompts."""
    from search.validate import dynamic_sweep, run_calibration_prompts, validate

    summary, _, _ = baseline
    calib = run_calibration_prompts(Path(summary["_out"]), 2)
    assert calib == PROMPTS[:2]
    names = [n for n, _ in dynamic_sweep(pipe, STEPS, calib)]
    for prefix in ("first-block", "cg-taylor", "taylorseer", "delta-dit", "teacache", "magcache", "erta"):
        assert sum(n.startswith(prefix) for n in names) >= 2, (prefix, names)
    assert not any(n.startswith(("teacache", "magcache", "erta")) for n, _ in dynamic_sweep(pipe, STEPS, []))
    res = validate(Path(summary["_out"]), "random-tiny", PROMPTS[2:], [5, 6], dynamic="sweep", pipe=pipe,
                   shapes=False, calib=calib)
    dyn = [r for r in res["rows"] if r["kind"] == "dynamic"]
    assert [r["variant"] for r in dyn] == names
    ran = [r for r in dyn if "skipped" not in r]
    assert max(r["macs_speedup"] for r in ran) > 1.2  # the sweep reaches real speedups
    assert set(res["verdicts"]["dominated"]) == {"fora-2", "fora-3", "fora-4", *(r["variant"] for r in ran)}
    from search.validate import plot

    assert plot(res, Path(summary["_out"]) / "v.png").stat().st_size > 10_000
    # a capped front: every baseline still gets its best front point at >= its speedup
    from search.validate import select_front

    front = [dc.Schedule.load(f) for f in sorted((Path(summary["_out"]) / "front").glob("*.json"))]
    few = select_front(front, res["rows"], 2)
    speeds = [s.metadata["macs_speedup"] for s in few]
    for r in res["rows"]:
        if r["kind"] in ("fora", "dynamic") and "skipped" not in r and r["macs_speedup"] <= max(speeds):
            ok = [s for s in front if s.metadata["macs_speedup"] >= r["macs_speedup"] - 1e-9]
            best = min(ok, key=lambda s: (s.metadata["objectives"]["quality_loss"], -s.metadata["macs_speedup"]))
            assert best.name in {s.name for s in few}
    capped = validate(Path(summary["_out"]), "random-tiny", PROMPTS[2:], [5, 6], dynamic=False, pipe=pipe,
                      shapes=False, front_max=1)
    assert 1 <= sum(r["kind"] == "front" for r in capped["rows"]) <= len(front)
    assert capped["front_total"] == len(front)
    with pytest.raises(FileNotFoundError, match="--calib-prompts 0"):
        run_calibration_prompts(Path(summary["_out"]) / "nowhere", 2)


def test_front_is_the_archive_front_over_every_evaluation(baseline):
    """front/*.json = non-dominated set of every evaluated schedule (selection cannot lose a front member)."""
    from search.pareto import pareto

    summary, _, search = baseline
    fit = json.loads((Path(summary["_out"]) / "checkpoint.json").read_text())["fitness"]
    pts = sorted({(f["macs"] / search.full_macs, f["quality"]) for f in fit.values() if not f.get("partial")})
    want = sorted(pts[i] for i in pareto(pts))
    got = sorted((r["macs_speedup"] ** -1, r["quality"]) for r in summary["front"])
    assert len(got) == len(want) and all(a == pytest.approx(b, rel=1e-12) for a, b in zip(got, want))


def test_heuristic_seeds_include_warmup_and_two_phase_fora(pixart_space):
    from search.genome import heuristic_seeds, two_phase

    names = [s.name for s in heuristic_seeds(pixart_space, 20)]
    assert {"fora-3-w2", "fora-4-w4", "fora-2to4@6", "fora-4to2@10"} <= set(names)
    assert len(names) == len(set(names))
    s = two_phase(pixart_space, 12, 2, 4, 6)
    assert [bool(s.compute[i].all()) for i in range(12)] == [i in (0, 2, 4, 6, 10) for i in range(12)]


def test_step_profile_probes_every_step_once(baseline):
    """Steps 1..S-1 are each probed (that step reused alone) as ordinary cached evaluations; the profile is
    checkpointed, and the profiled seeds are in the initial population's fitness cache too."""
    from search.genome import profiled_seeds, step_probe

    summary, _, s = baseline
    prof = {int(k): v for k, v in s.state.step_profile.items()}
    assert sorted(prof) == list(range(1, STEPS))
    for i, err in prof.items():
        probe = step_probe(s.space, STEPS, i)
        assert not probe.compute[i][s.mask[i]].any()
        assert probe.compute[[j for j in range(STEPS) if j != i]].all()
        assert s.state.fitness[s._ind_key(probe.compute)]["quality"] == err > 0
    ck = json.loads((Path(summary["_out"]) / "checkpoint.json").read_text())
    assert {int(k): v for k, v in ck["step_profile"].items()} == prof
    seeds = profiled_seeds(s.space, STEPS, prof)
    assert seeds and s._ind_key(seeds[0].compute) in s.state.fitness


def test_profiled_seeds_pick_low_error_steps_without_clustering(pixart_space):
    from search.genome import evolvable, profiled_seeds

    errs = {i: 1.0 for i in range(1, 20)}
    errs.update({12: 0.1, 13: 0.1, 14: 0.1, 15: 0.2, 3: 0.3})
    seeds = profiled_seeds(pixart_space, 20, errs)
    mask = evolvable(pixart_space, 20)
    reused = []
    for s in seeds:
        assert (s.compute | mask).all() and s.compute[0].all()  # only evolvable cells ever reuse
        steps = [i for i in range(1, 20) if not s.compute[i][mask[i]].any()]
        assert all(s.compute[i].all() for i in range(20) if i not in steps)  # whole steps only
        reused.append(steps)
    assert reused[:4] == [[12], [12, 14], [3, 12, 14], [1, 3, 12, 14]]  # lowest errors, no two adjacent
    assert [len(r) for r in reused] == sorted({len(r) for r in reused})  # one seed per k, increasing
    longest = [max(len(list(g)) for inside, g in itertools.groupby(range(20), key=r.__contains__) if inside)
               for r in reused]
    assert max(n for n, r in zip(longest, reused) if len(r) <= 12) <= 2  # 2-runs fit 12 of 19 steps
    assert len(reused[-1]) == 18  # all but one step


def test_psnr_objective_and_no_profile_seeds(pipe, prompts_file, tmp_path):
    from search.genome import step_probe
    from search.objectives import PSNR_CAP_DB, latent_psnr

    _, s = _run(pipe, _cfg(prompts_file, objective="psnr", generations=1, profile_seeds=False), tmp_path / "p")
    assert s.state.step_profile == {}
    assert s._ind_key(step_probe(s.space, STEPS, 1).compute) not in s.state.fitness
    full = s.state.fitness[s._ind_key(dc.compute_all(s.space, STEPS).compute)]
    assert full["quality"] == 0.0 and full["metrics"]["latent_psnr_db"] == PSNR_CAP_DB
    fora2 = s.state.fitness[s._ind_key(dc.fora(s.space, STEPS, 2).compute)]
    fora3 = s.state.fitness[s._ind_key(dc.fora(s.space, STEPS, 3).compute)]
    assert 0 < fora2["quality"] < fora3["quality"]  # more reuse, larger deficit
    assert fora2["quality"] == pytest.approx(PSNR_CAP_DB - fora2["metrics"]["latent_psnr_db"])
    a, b = torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 0.1)
    assert latent_psnr(a, b).tolist() == pytest.approx([20.0, 20.0])
    assert latent_psnr(a, a).tolist() == [PSNR_CAP_DB, PSNR_CAP_DB]


def test_image_psnr_objective_matches_the_validation_metric(pipe, prompts_file, tmp_path):
    from eval.fidelity import decode_latents, psnr
    from search.objectives import PSNR_CAP_DB, make_objective

    _, s = _run(pipe, _cfg(prompts_file, objective="image-psnr", generations=1, profile_seeds=False), tmp_path / "i")
    full = s.state.fitness[s._ind_key(dc.compute_all(s.space, STEPS).compute)]
    assert full["quality"] == 0.0 and full["metrics"]["psnr_db"] == PSNR_CAP_DB
    fora2 = s.state.fitness[s._ind_key(dc.fora(s.space, STEPS, 2).compute)]
    fora3 = s.state.fitness[s._ind_key(dc.fora(s.space, STEPS, 3).compute)]
    assert 0 < fora2["quality"] < fora3["quality"]
    # the objective is the validation's image PSNR (eval.fidelity.psnr on decoded images), per candidate
    ref = s.reference
    lat = ref + 0.05 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(0))
    m = make_objective("image-psnr", s.pipe, s.prompts)(lat, ref)
    assert m["psnr_db"] == pytest.approx(psnr(decode_latents(s.pipe, lat), decode_latents(s.pipe, ref)), rel=1e-5)
    assert m["quality"] == pytest.approx(PSNR_CAP_DB - m["psnr_db"])


def test_validation_rules_psnr_mse_and_paired_adherence():
    from search.validate import paired_not_worse, to_markdown, verdicts

    n = 40
    base = [1.0] * 20 + [0.5] * 20

    def row(name, kind, speed, psnr, mse, adh):
        return {"variant": name, "kind": kind, "macs_speedup": speed, "psnr_db": psnr, "latent_psnr_db": psnr,
                "latent_mse": mse, "adherence": sum(adh) / n, "all_correct": 0.0, "adherence_per_prompt": adh}

    rows = [row("uncached", "baseline", 1.0, float("inf"), 0.0, base),
            row("fora-2", "fora", 2.0, 40.0, 0.01, base),
            row("learned", "front", 2.0, 41.0, 0.02, [*base[:-1], 0.25]),  # one prompt a quarter worse
            ]
    v = verdicts(rows)
    assert v["dominated"]["fora-2"] == []  # strictly lower adherence
    assert v["by_rule"]["latent_mse"]["fora-2"] == []
    assert v["by_rule"]["psnr, adherence within noise"]["fora-2"] == ["learned"]  # one judgment is noise
    assert paired_not_worse(base, base) and not paired_not_worse([0.0] * n, base)
    md = to_markdown({"rows": rows, "verdicts": v})
    assert "| fora-2 | **not dominated** | **not dominated** | **not dominated** | learned |" in md


def test_damaged_checkpoint_is_named(pipe, prompts_file, tmp_path):
    out = tmp_path / "d"
    _run(pipe, _cfg(prompts_file, generations=1), out)
    ck = json.loads((out / "checkpoint.json").read_text())
    for key in ("fitness", "rng", "population"):
        (out / "checkpoint.json").write_text(json.dumps({k: v for k, v in ck.items() if k != key}))
        with pytest.raises(SearchError, match=f"damaged .*{key}"):
            _run(pipe, _cfg(prompts_file, generations=2), out, resume=True)


def test_resume_of_a_checkpoint_without_prompt_hash_warns(pipe, prompts_file, tmp_path):
    out = tmp_path / "old"
    _run(pipe, _cfg(prompts_file, generations=1), out)
    ck = json.loads((out / "checkpoint.json").read_text())
    ck["prompts_sha256"] = None
    (out / "checkpoint.json").write_text(json.dumps(ck))
    with pytest.warns(UserWarning, match="predates prompt hashes"):
        _run(pipe, _cfg(prompts_file, generations=2), out, resume=True)


def test_surrogate_recovers_an_additive_error_model_with_step_interactions(pixart_space):
    """The screen's ridge model fits q = Σ a_c r_c + Σ v_c r_c r_c⁻ from as many schedules as a search has."""
    import random

    from search.genome import random_genome
    from search.screen import Surrogate, features, front_quality

    mask = evolvable(pixart_space, STEPS)
    rng, nrng = random.Random(0), np.random.default_rng(0)
    genomes = [random_genome(rng, mask) for _ in range(400)]
    w = np.abs(nrng.normal(size=features(genomes[:1], mask).shape[1]))
    w[1 + 2 * mask.sum():] *= 0.5  # consecutive-reuse terms
    q = features(genomes, mask) @ w
    model = Surrogate(mask).fit(genomes[:300], list(q[:300]))
    pred = model.predict(genomes[300:])
    assert np.corrcoef(pred, q[300:])[0, 1] > 0.99
    assert front_quality([(0.5, 2.0), (0.8, 1.0)], 0.6) == 2.0
    assert front_quality([(0.5, 2.0), (0.8, 1.0)], 0.4) == float("inf")


def test_surrogate_generations_extend_the_single_breeding_and_keep_predictions_out(pipe, baseline, tmp_path):
    """--screen-generations 1 is the single breeding of --screen-pool populations; G = 4 breeds the same first
    generation, then more from survivors chosen on q̂. Pool children carry no fitness, nothing predicted is cached."""
    import copy

    from search.screen import Surrogate, breed_pool

    _, pf, _ = baseline
    s = Search(_cfg(pf, generations=1, screen_keep=0.5), tmp_path / "pool", pipe=pipe)
    try:
        s.run(progress=False)
        pop = s.archive_front()
        archive = list(s.state.fitness.values())
        model = Surrogate(s.mask).fit([decode(f["genome"], s.shape) for f in archive], [f["quality"] for f in archive])
        cached, state = set(s.state.fitness), copy.deepcopy(s.rng.getstate())
        s.cfg.screen_pool = 2
        direct = [k.key for _ in range(2) for k in s.offspring(pop)]
        pools = {}
        for g in (1, 4):
            s.rng.setstate(state)
            s.cfg.screen_generations = g
            pools[g] = breed_pool(s, pop, model if g > 1 else None)
        assert list(pools[1]) == list(dict.fromkeys(direct))
        assert set(pools[1]) < set(pools[4])
        assert set(s.state.fitness) == cached
        assert not any(k.fitness.valid for k in pools[4].values())
        with pytest.raises(SearchError, match="screen-generations"):
            SearchConfig(screen_generations=0).check()
    finally:
        s.close()


@pytest.mark.parametrize("generations", [1, 3])
def test_screening_evaluates_fewer_children_and_reports_only_full_evaluations(pipe, baseline, tmp_path, generations):
    """--screen-keep 0.5 (bred once, or over 3 generations on the surrogate): at most half a population of new
    schedules per generation; the front is exact."""
    summary, pf, _ = baseline
    out = tmp_path / "scr"
    scr, s = _run(pipe, _cfg(pf, screen_keep=0.5, screen_pool=3, screen_generations=generations), out)
    hist = scr["history"]
    assert hist[-1]["screened"] > 0
    for a, b in itertools.pairwise(hist):
        assert b["evaluations"] - a["evaluations"] <= 4  # ceil(0.5 * 8)
    assert hist[-1]["block_evals"] < summary["history"][-1]["block_evals"]
    fit = s.state.fitness
    objective = make_objective("fidelity", pipe, PROMPTS)
    ev = Evaluator(pipe, PROMPTS, s.seeds, STEPS, prefix_sharing=False, call_defaults=s.call_defaults)
    ref = ev.evaluate([dc.compute_all(s.space, STEPS)])[0]
    for r in scr["front"]:  # every reported number is a fresh full evaluation's
        meta = json.loads((out / r["file"]).read_text())["metadata"]
        assert meta["search"]["key"] in fit and not fit[meta["search"]["key"]].get("partial")
        lat = ev.evaluate([dc.Schedule.load(out / r["file"])])[0]
        assert objective(lat, ref)["quality"] == pytest.approx(meta["objectives"]["quality_loss"], rel=1e-9)
    ev.close()
    with pytest.raises(SearchError, match="screen-keep"):
        SearchConfig(screen_keep=0).check()


def test_validate_specs_without_a_run(tmp_path, capsys, pipe, baseline):
    """`--specs` validates caching specs (here FORA-2 under CFG-branch caching) as candidates without a search run;
    their rows carry the runtime's speedups and are judged as front points; bad inputs are one clear error."""
    from search.validate import main, validate

    summary, _, _ = baseline
    flux = dc.load_pipeline("random-tiny:flux").pipe
    res = validate(None, "random-tiny:flux", PROMPTS[:2], [3, 4], dynamic=False, pipe=flux, shapes=False,
                   specs=["fora:2", "fora:2+cfg-cache:2:1"], steps=10)  # uncond reconstructed at step 4
    rows = {r["variant"]: r for r in res["rows"]}
    assert rows["fora-2+cfg-cache-2-w1"]["kind"] == "spec" and res["run"] is None
    plain, both = rows["fora-2"], rows["fora-2+cfg-cache-2-w1"]  # "fora-2": the FORA baseline's row
    assert both["macs_speedup"] > plain["macs_speedup"] > 1.5 and both["latent_mse"] > plain["latent_mse"]
    spec_fora = [r for r in res["rows"] if r["kind"] == "spec" and r["variant"] == "fora-2"]
    assert spec_fora and spec_fora[0]["latent_mse"] == plain["latent_mse"]  # same spec, same generation
    assert "fora-2" in res["verdicts"]["dominated"]
    with pytest.raises(ValueError, match="does not match the run's schedules"):
        validate(Path(summary["_out"]), "random-tiny", PROMPTS[:1], [3], dynamic=False, pipe=pipe, shapes=False,
                 steps=STEPS + 1)
    with pytest.raises(ValueError, match="nothing to validate"):
        validate(None, "random-tiny:flux", PROMPTS[:1], [3], dynamic=False, pipe=flux, shapes=False)
    with pytest.raises(SystemExit):
        main(["--model", "random-tiny:flux", "--specs", "fora:2"])  # no --out without --run
    assert "--specs SPEC ... with --out DIR" in capsys.readouterr().err
    assert main(["--model", "random-tiny:flux", "--specs", "fora:x", "--out", str(tmp_path), "--num-prompts", "1",
                 "--prompts", str(_prompt_file(tmp_path)), "--dynamic", "none", "--steps", str(STEPS)]) == 2
    assert "fora:x" in capsys.readouterr().err


def _prompt_file(tmp_path: Path) -> Path:
    p = tmp_path / "p.txt"
    p.write_text("\n".join(PROMPTS) + "\n")
    return p
