"""The search on every family: exact loops (FLUX, SD3, Wan, DiT, PixArt), prefix sharing, front files whose MACs
the runtime reproduces, `dit-cache eval` on them, and SIGKILL + --resume on FLUX."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dit_cache as dc

pytest.importorskip("deap")

from search.evaluator import Evaluator
from search.loops import LoopError, make_loop
from search.nsga import Search, SearchConfig

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("pixart", "flux", "sd3", "wan", "dit")
PROMPTS = ["a red circle on black", "two blue squares", "a photo of a cat", "a green cross, small"]
STEPS = 6


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    return dc.load_pipeline(f"random-tiny:{request.param}")


def _loop(model, prompts=PROMPTS[:3], seeds=(5, 6, 7)):
    return make_loop(model.pipe, list(prompts), list(seeds), STEPS, model.call_defaults)


def test_loop_reproduces_the_pipeline_bit_for_bit(model):
    """Uncached and under a random static schedule: the loop's final latents are the pipeline's (DiT: its images)."""
    loop = _loop(model)
    assert torch.equal(loop.as_pipe_output(loop.run()), loop.pipe_output())
    sched = dc.random_schedule(dc.space_of(model.pipe.transformer), STEPS, 0.5, seed=1)
    with dc.accelerate(model.pipe.transformer, sched) as h:
        ours = loop.as_pipe_output(loop.run(h))
        assert h.stats.skipped > 0
    with dc.accelerate(model.pipe.transformer, sched):
        ref = loop.pipe_output()
    assert torch.equal(ours, ref)
    assert not torch.equal(ref, loop.pipe_output())  # the schedule changed the result: the comparison has teeth


def test_restored_prefix_state_continues_exactly(model):
    """Stop after step 2, keep the state, run other steps in between, resume: same latents as one straight run."""
    loop = _loop(model)
    sched = dc.random_schedule(dc.space_of(model.pipe.transformer), STEPS, 0.5, seed=4)
    backend = dc.StaticScheduleBackend(sched, keep_all=True)
    with dc.accelerate(model.pipe.transformer, backend) as h:
        straight = loop.run(h)
        h.reset()
        state = loop.initial_state()
        for _ in range(3):
            state = loop.step(state, h)
        kept = state
        other = loop.initial_state()  # an unrelated trajectory runs through the same handle in between
        for _ in range(4):
            other = loop.step(other, h)
        h.restore(kept.cache)
        state = kept
        while state.step < STEPS - 1:
            state = loop.step(state, h)
    assert torch.equal(loop.final(state.latents), straight)


def test_evaluator_prefix_sharing_equals_the_pipeline_and_counts_calls(model):
    """Every candidate's latents equal a naive run through `pipe(...)` under `dc.accelerate`; MACs per image
    equal the runtime's count; block evaluations count both transformer calls of a step where there are two."""
    pipe = model.pipe
    ev = Evaluator(pipe, PROMPTS[:3], [0, 1, 2], STEPS, batch_size=2, call_defaults=model.call_defaults)
    space = ev.space
    a = dc.random_schedule(space, STEPS, 0.5, seed=1)
    b = a.compute.copy()
    b[STEPS - 2:] = True
    scheds = [a, dc.Schedule(b, space), dc.fora(space, STEPS, 2), dc.compute_all(space, STEPS)]
    try:
        got = ev.evaluate(scheds)
        counts = ev.counts
        macs = [ev.macs(s) for s in scheds]
    finally:
        ev.close()
    assert counts.steps_run < counts.steps_naive
    calls = 2 if model.family in ("flux", "wan") else 1  # true CFG / Wan: separate cond and uncond calls
    assert counts.blocks_per_step == len(space.block_ids) * calls
    for s, lat, m in zip(scheds, got, macs):
        parts, executed = [], 0
        for loop in ev.loops:
            with dc.accelerate(pipe, s) as h:
                parts.append(loop.pipe_output())
                executed += h.stats.macs()["executed"]
        assert torch.equal(torch.cat([lp.as_pipe_output(x) for lp, x in zip(ev.loops, lat.split([2, 1]))]),
                           torch.cat(parts)), s.name
        assert executed == m * 3, s.name


@pytest.fixture(scope="module")
def searched(model, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"search_{model.family}")
    pf = d / "prompts.txt"
    pf.write_text("\n".join(PROMPTS) + "\n")
    cfg = SearchConfig(model=model.name, prompts=str(pf), population=8, generations=2, steps=STEPS, seed=0,
                       batch_size=2, late_bias=6, cx_points=2)
    s = Search(cfg, d / "run", pipe=model.pipe)
    try:
        summary = s.run(progress=False)
    finally:
        s.close()
    return summary, d / "run", pf


def test_front_files_run_with_the_macs_the_search_reported(model, searched):
    summary, out, _ = searched
    assert len(summary["front"]) >= 2 and summary["prefix_sharing_saving"] > 1.5
    loop = _loop(model, PROMPTS[:2], (11, 12))
    for r in summary["front"]:
        meta = json.loads((out / r["file"]).read_text())["metadata"]
        with dc.accelerate(model.pipe, str(out / r["file"])) as h:
            loop.pipe_output()
            assert h.stats.macs()["executed"] == 2 * meta["macs"], r["file"]
    assert any(r["macs_speedup"] > 1.2 for r in summary["front"])


def test_dit_cache_eval_reports_the_search_macs_and_quality(model, searched, tmp_path):
    """Front files through `dit-cache eval --schedules`: the search's MACs per image, and the latents it scored
    (its quality loss, recomputed from eval's samples, is the file's to the bit)."""
    from dit_cache.cli import main
    from eval.generate import load_sample
    from search.objectives import make_objective

    summary, out, pf = searched
    objective = make_objective("fidelity", model.pipe, PROMPTS)
    for r in sorted(summary["front"], key=lambda r: -r["macs_speedup"])[:2]:
        meta = json.loads((out / r["file"]).read_text())["metadata"]
        ev = tmp_path / Path(r["file"]).stem
        argv = ["eval", "--model", model.name, "--steps", str(STEPS), "--prompts", str(pf), "--num-prompts",
                str(len(PROMPTS)), "--schedules", str(out / r["file"]), "--metrics", "fidelity", "--batch-size", "2",
                "--out", str(ev), "--quiet"]
        assert main(argv) == 0
        row = next(x for x in json.loads((ev / "report.json").read_text())["rows"] if x["variant"] == meta["name"])
        assert row["macs_per_image"] == meta["macs"]
        if model.family == "dit":  # DiTPipeline always decodes: eval keeps its images, no latents to rescore
            assert load_sample(ev, meta["name"], "p00000-s0")[1] is None
            continue
        lat = {v: torch.stack([load_sample(ev, v, f"p{i:05d}-s0")[1] for i in range(len(PROMPTS))])
               for v in (meta["name"], "uncached")}
        assert objective(lat[meta["name"]], lat["uncached"])["quality"] == meta["objectives"]["quality_loss"]


def test_flux_search_resumes_after_sigkill_with_the_uninterrupted_front(tmp_path):
    """A FLUX search killed right after generation 1's checkpoint, resumed, ends with the uninterrupted front."""
    pf = tmp_path / "prompts.txt"
    pf.write_text("\n".join(PROMPTS) + "\n")
    args = ["--model", "random-tiny:flux", "--prompts", str(pf), "--population", "8", "--generations", "3",
            "--steps", str(STEPS), "--seed", "3", "--batch-size", "2", "--late-bias", "6", "--cx-points", "2"]
    killer = ("import os, signal, sys\nfrom search import cli, nsga\norig = nsga.Search._save\n"
              "def save(self, pop):\n    orig(self, pop)\n    if self.state.generation == 1:\n"
              "        os.kill(os.getpid(), signal.SIGKILL)\nnsga.Search._save = save\nsys.exit(cli.main(sys.argv[1:]))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kill = subprocess.run([sys.executable, "-c", killer, *args, "--out", str(tmp_path / "k"), "--quiet"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert kill.returncode == -signal.SIGKILL, kill.stderr[-2000:]
    assert json.loads((tmp_path / "k" / "checkpoint.json").read_text())["generation"] == 1
    for out, extra in ((tmp_path / "k", ["--resume"]), (tmp_path / "straight", [])):
        done = subprocess.run([sys.executable, "-m", "search", *args, "--out", str(out), "--quiet", *extra], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]

    def front(out: Path) -> list:
        return [json.loads(f.read_text())["compute"] for f in sorted((out / "front").glob("*.json"))]

    assert front(tmp_path / "k") == front(tmp_path / "straight") and front(tmp_path / "k")
    hist = [json.loads((o / "history.json").read_text()) for o in (tmp_path / "k", tmp_path / "straight")]
    assert [h["hypervolume"] for h in hist[0]["history"]] == [h["hypervolume"] for h in hist[1]["history"]]
    assert hist[0]["evaluations"] == hist[1]["evaluations"]


def test_dit_prompts_are_class_ids_or_label_names():
    pipe = dc.load_pipeline("random-tiny:dit").pipe
    loop = make_loop(pipe, ["3", "17", "a photo of a cat"], [0, 1, 2], STEPS, {"guidance_scale": 4.0})
    assert loop.class_labels[:2] == [3, 17] and 0 <= loop.class_labels[2] < 1000
    assert loop.labels.tolist()[3:] == [1000, 1000, 1000]  # the null class of the CFG half


def test_unsupported_pipelines_and_settings_are_named():
    class OtherPipeline:  # a pipeline class without a loop
        transformer = None

    with pytest.raises(LoopError, match=r"no denoising loop for OtherPipeline.*FluxPipeline"):
        make_loop(OtherPipeline(), ["x"], [0], STEPS)
    flux = dc.load_pipeline("random-tiny:flux")
    with pytest.raises(LoopError, match=r"cannot reproduce the call argument\(s\) sigmas"):
        make_loop(flux.pipe, ["x"], [0], STEPS, {**flux.call_defaults, "sigmas": [1.0, 0.5]})
    wan = dc.load_pipeline("random-tiny:wan")
    with pytest.raises(LoopError, match=r"num_frames = 4k\+1 frames"):
        make_loop(wan.pipe, ["x"], [0], STEPS, {**wan.call_defaults, "num_frames": 6})


def test_search_cli_accepts_every_family_and_names_bad_models(tmp_path):
    pf = tmp_path / "p.txt"
    pf.write_text("\n".join(PROMPTS) + "\n")
    res = subprocess.run([sys.executable, "-m", "search", "--model", "random-tiny:mochi", "--prompts", str(pf),
                          "--out", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "unknown random-tiny family 'mochi'" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("family", ["wan", "dit", "flux"])
def test_image_psnr_objective_decodes_each_family(family, tmp_path):
    """The image objective decodes with the family's VAE path (FLUX unpacks, Wan stacks frames, DiT's scaling):
    compute-all scores exactly 0 and a cached schedule scores the PSNR of its decoded images."""
    from eval.fidelity import psnr_per_image
    from search.loops import decoder
    from search.objectives import make_objective

    m = dc.load_pipeline(f"random-tiny:{family}")
    ev = Evaluator(m.pipe, PROMPTS[:2], [0, 1], STEPS, call_defaults=m.call_defaults)
    try:
        ref, lat = ev.evaluate([dc.compute_all(ev.space, STEPS), dc.fora(ev.space, STEPS, 2)])
    finally:
        ev.close()
    decode = decoder(m.pipe, STEPS, m.call_defaults)
    obj = make_objective("image-psnr", m.pipe, PROMPTS[:2], decode=decode)
    assert obj(ref, ref)["quality"] == 0.0
    img, img_ref = decode(lat), decode(ref)
    assert img.ndim == 4 and img.shape[1] == 3 and img.shape[0] == 2
    expect = float(psnr_per_image(img, img_ref).clamp(max=100).mean())
    assert obj(lat, ref)["psnr_db"] == pytest.approx(expect) and expect < 100


def _small_search(model_name: str, out: Path, pf: Path, **kw):
    cfg = SearchConfig(**{"model": model_name, "prompts": str(pf), "population": 8, "generations": 2, "steps": STEPS,
                          "seed": 1, "batch_size": 2, "late_bias": 6, "cx_points": 2, **kw})
    s = Search(cfg, out)
    try:
        return s.run(progress=False)
    finally:
        s.close()


def _front_cells(out: Path) -> list:
    return [json.loads(f.read_text())["compute"] for f in sorted((out / "front").glob("*.json"))]


def test_flux_workers_forecast_and_validation(tmp_path):
    """Two worker processes give the one-process front; a --forecast front file runs with its MACs; the held-out
    validation profiles and runs every dynamic baseline on FLUX (none skipped)."""
    from search.validate import run_calibration_prompts, validate

    pf = tmp_path / "p.txt"
    pf.write_text("\n".join(PROMPTS) + "\n")
    _small_search("random-tiny:flux", tmp_path / "one", pf)
    _small_search("random-tiny:flux", tmp_path / "two", pf, workers=2)
    assert _front_cells(tmp_path / "one") == _front_cells(tmp_path / "two")
    fc = _small_search("random-tiny:flux", tmp_path / "fc", pf, forecast=True)
    m = dc.load_pipeline("random-tiny:flux")
    files = [tmp_path / "fc" / r["file"] for r in fc["front"]]
    mixed = [f for f in files if dc.Schedule.load(f).forecast is not None]
    assert mixed
    loop = _loop(m, PROMPTS[:2], (3, 4))
    with dc.accelerate(m.pipe, str(mixed[0])) as h:
        loop.pipe_output()
        assert h.stats.macs()["executed"] == 2 * json.loads(mixed[0].read_text())["metadata"]["macs"]
    calib = run_calibration_prompts(tmp_path / "one", 2)
    res = validate(tmp_path / "one", "random-tiny:flux", PROMPTS[2:], [9, 10], dynamic="sweep", pipe=m.pipe,
                   shapes=False, calib=calib, front_max=3)
    kinds = {r["kind"] for r in res["rows"]}
    assert {"baseline", "fora", "dynamic", "front"} <= kinds
    assert not [r for r in res["rows"] if "skipped" in r]
    assert any(r["variant"].startswith("teacache") for r in res["rows"])
    assert next(r for r in res["rows"] if r["kind"] == "baseline")["latent_mse"] == 0.0


def test_search_on_a_saved_pipeline_folder_of_another_family(tmp_path):
    """--model FOLDER (here a saved SD3 pipeline): the folder's own call defaults, a front that runs with its MACs."""
    dc.load_pipeline("random-tiny:sd3").pipe.save_pretrained(tmp_path / "sd3")
    pf = tmp_path / "p.txt"
    pf.write_text("\n".join(PROMPTS) + "\n")
    summary = _small_search(str(tmp_path / "sd3"), tmp_path / "run", pf, generations=1)
    m = dc.load_pipeline(str(tmp_path / "sd3"))
    assert m.family == "sd3" and summary["front"]
    loop = _loop(m, PROMPTS[:2], (5, 6))
    best = max(summary["front"], key=lambda r: r["macs_speedup"])
    with dc.accelerate(m.pipe, str(tmp_path / "run" / best["file"])) as h:
        loop.pipe_output()
        assert h.stats.macs()["executed"] == 2 * json.loads((tmp_path / "run" / best["file"]).read_text())["metadata"]["macs"]
