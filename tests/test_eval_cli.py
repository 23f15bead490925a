"""`dit-cache eval` end to end on a tiny random pipeline: report files, resume, 2-process run, offline errors."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dit_cache as dc
from dit_cache.cli import main
from eval.generate import load_sample

from .conftest import ROOT

BASE = ["eval", "--model", "random-tiny", "--steps", "4", "--num-prompts", "3", "--quiet"]
ROW_KEYS = {"variant", "compute_fraction", "macs_per_image", "macs_speedup", "wall_median_s", "wall_iqr_s",
            "wall_speedup", "peak_memory_mb", "psnr_db", "ssim", "latent_mse", "fid_vs_uncached", "clip_score"}


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """One full run: uncached + fora:2 + a compute-all schedule file + a cache-ff schedule file, every metric."""
    tmp = tmp_path_factory.mktemp("eval")
    model = dc.load_pipeline("random-tiny")
    space = dc.space_of(model.pipe.transformer)
    dc.compute_all(space, 4).save(tmp / "all.json")
    dc.cache_component(space, 4, "ff", 2).save(tmp / "ff2.json")
    out = tmp / "report"
    argv = [*BASE, "--schedules", "fora:2", str(tmp / "all.json"), str(tmp / "ff2.json"), "--seeds", "2",
            "--metrics", "fidelity,latency,fid,clip", "--fid-features", "pixels", "--clip-model", "ViT-S-32",
            "--clip-pretrained", "none", "--repeats", "2", "--batch-size", "2", "--out", str(out)]
    assert main(argv) == 0
    return out, argv, model


def test_report_files_and_keys(e2e):
    out, _, _ = e2e
    report = json.loads((out / "report.json").read_text())
    for key in ("command", "argv", "config", "versions", "machine", "rows", "notes", "variants", "per_sample", "samples"):
        assert key in report
    assert report["command"].startswith("dit-cache eval --model random-tiny")
    assert report["versions"]["torch"] == torch.__version__ and report["machine"]["num_processes"] == 1
    assert report["num_samples"] == 6  # 3 prompts x 2 seeds
    rows = {r["variant"]: r for r in report["rows"]}
    assert list(rows) == ["uncached", "fora-2", "compute-all", "cache-ff-2"]
    for r in rows.values():
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
    md = (out / "report.md").read_text()
    assert "| schedule |" in md and "| fora-2 |" in md and "![Pareto](pareto.png)" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "<table>" in html and "cache-ff-2" in html
    assert (out / "pareto.png").stat().st_size > 0 and (out / "grid.png").stat().st_size > 0
    assert any("random weights" in n for n in report["notes"])


def test_report_numbers(e2e):
    out, _, _ = e2e
    rows = {r["variant"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    base, fora, full, ff = rows["uncached"], rows["fora-2"], rows["compute-all"], rows["cache-ff-2"]
    # compute-all hooks are bit-identical to the uncached model
    assert full["latent_mse"] == 0.0 and full["psnr_db"] == "inf" and full["ssim"] == pytest.approx(1.0)
    assert full["macs_speedup"] == pytest.approx(1.0) and full["fid_vs_uncached"] == pytest.approx(0.0, abs=1e-6)
    assert base["latent_mse"] == 0.0 and base["macs_speedup"] == 1.0 and base["wall_speedup"] == 1.0
    # caching changes the output and saves MACs: FORA-2 on 4 steps computes 2 of 4 steps
    assert fora["latent_mse"] > 0 and math.isfinite(fora["psnr_db"]) and fora["compute_fraction"] == 0.5
    assert 1.5 < fora["macs_speedup"] < 2.0 and 1.0 < ff["macs_speedup"] < fora["macs_speedup"]
    assert fora["macs_per_image"] == pytest.approx(base["macs_per_image"] / fora["macs_speedup"])
    assert all(r["wall_median_s"] > 0 and r["peak_memory_mb"] > 0 for r in rows.values())
    assert 0 <= fora["clip_score"] <= 100


def test_uncached_images_match_a_plain_pipeline_call(e2e):
    out, _, model = e2e
    from eval.generate import _run_pipe

    samples = json.loads((out / "report.json").read_text())["samples"][4:6]  # the third batch of 2
    kwargs = model.call_kwargs(4)
    images, latents = _run_pipe(model.pipe, [s["prompt"] for s in samples], [s["seed"] for s in samples], kwargs)
    for j, s in enumerate(samples):
        img, lat = load_sample(out, "uncached", s["stem"])
        assert torch.equal(lat, latents[j])
        assert torch.equal(img, (images[j].clamp(0, 1) * 255).round().to(torch.uint8))


def test_rerun_skips_finished_images_and_redoes_missing_ones(e2e, capsys):
    out, argv, _ = e2e
    before = json.loads((out / "report.json").read_text())
    shutil.copytree(out, out.parent / "again")
    again = out.parent / "again"
    (again / "samples/fora-2/p00001-s1.json").unlink()  # as if killed before this image's sidecar was written
    (again / "samples/cache-ff-2/p00002-s0.npz").unlink()
    lat_before = load_sample(out, "fora-2", "p00001-s1")[1]
    assert main([*argv[:-1], str(again)]) == 0
    after = json.loads((again / "report.json").read_text())
    assert after["generation"] == {"generated_by_main": 2, "skipped_by_main": 4 * 6 - 2}
    # regenerated alone instead of in a batch of 2: equal up to float noise of the batched matmuls
    assert torch.allclose(load_sample(again, "fora-2", "p00001-s1")[1], lat_before, rtol=1e-4, atol=1e-3)
    for a, b in zip(before["rows"], after["rows"]):
        assert a["macs_speedup"] == b["macs_speedup"]
        for k in ("latent_mse", "fid_vs_uncached", "clip_score"):
            assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-6), k


def test_changed_settings_regenerate(e2e, tmp_path):
    out, argv, _ = e2e
    shutil.copytree(out / "samples", tmp_path / "samples")
    argv2 = [*argv[:-1], str(tmp_path)]
    argv2[argv2.index("--steps") + 1] = "3"
    argv2 = [a for a in argv2 if not a.endswith(".json")]  # 4-step files no longer fit
    argv2[argv2.index("--metrics") + 1] = "fidelity"
    assert main(argv2) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["generation"]["skipped_by_main"] == 0


def _run_args(out: Path) -> list[str]:
    return [*BASE, "--schedules", "fora:2", "--metrics", "fidelity,fid", "--fid-features", "pixels",
            "--batch-size", "1", "--out", str(out)]


def test_two_process_accelerate_run_matches_one_process(tmp_path):
    pytest.importorskip("accelerate")
    assert main(_run_args(tmp_path / "one")) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    cmd = ["nice", "-n", "10", *launcher, "-m", "dit_cache.cli", *_run_args(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = json.loads((tmp_path / "one/report.json").read_text())
    two = json.loads((tmp_path / "two/report.json").read_text())
    assert two["machine"]["num_processes"] == 2 and one["machine"]["num_processes"] == 1
    assert two["generation"]["generated_by_main"] == 2 * 2  # prompts 0 and 2 of 3, both variants
    for a, b in zip(one["rows"], two["rows"]):
        for k in ("psnr_db", "ssim", "latent_mse", "macs_per_image", "fid_vs_uncached"):
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-9) if isinstance(a[k], float) else a[k] == b[k], k
    for stem in ("p00000-s0", "p00001-s0", "p00002-s0"):
        assert np.array_equal(load_sample(tmp_path / "one", "fora-2", stem)[0], load_sample(tmp_path / "two", "fora-2", stem)[0])


@pytest.mark.parametrize("extra, message", [
    (["--metrics", "clip"], "--clip-pretrained"),
    (["--metrics", "fid", "--fid-features", "inception"], "torch-fidelity"),
    (["--metrics", "adherence"], "embedded shapes model only"),
    (["--metrics", "fidelity,speed"], "unknown metrics ['speed']"),
    (["--schedules", "fora:x"], "bad schedule spec 'fora:x'"),
    (["--schedules", "nope.json"], "schedule file not found: nope.json"),
    (["--prompts", "missing.txt"], "prompt file not found"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
])
def test_clear_errors(extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if "torch-fidelity" in message:
        pytest.importorskip("torchmetrics")
        if any(p for p in sys.modules if p.startswith("torch_fidelity")):
            pytest.skip("torch-fidelity is installed")
    assert main([*BASE, "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "samples").exists()  # nothing generated before the error


def test_schedule_with_other_step_count_needs_resample(tmp_path, capsys):
    pipe = dc.load_pipeline("random-tiny").pipe
    dc.fora(dc.space_of(pipe.transformer), 8, 2).save(tmp_path / "f8.json")
    assert main([*BASE, "--schedules", str(tmp_path / "f8.json"), "--metrics", "fidelity", "--out", str(tmp_path / "o")]) == 2
    assert "has 8 steps but --steps is 4; pass --steps 8 or --resample" in capsys.readouterr().err


def test_missing_embedded_model_or_hub_id_names_the_fix(tmp_path, capsys, monkeypatch):
    from dit_cache.zoo import DEFAULT_MODEL, ZOO_DIR

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if not (ZOO_DIR / DEFAULT_MODEL / "model_index.json").exists():
        assert main(["eval", "--model", "tiny", "--metrics", "fidelity", "--out", str(tmp_path)]) == 2
        assert "--model random-tiny" in capsys.readouterr().err
    assert main(["eval", "--model", "someone/not-cached", "--out", str(tmp_path)]) == 2
    assert "pass --prompts FILE" in capsys.readouterr().err
    assert main(["eval", "--model", "someone/not-cached", "--prompts", "shapes:heldout", "--metrics", "fidelity",
                 "--out", str(tmp_path)]) == 2
    assert "could not load 'someone/not-cached'" in capsys.readouterr().err


def test_eval_help(capsys):
    from dit_cache.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--help"])
    out = capsys.readouterr().out
    assert "--schedules" in out and "accelerate launch" in out


def test_shapes_model_metrics_path(tmp_path, monkeypatch):
    """--model tiny scores adherence and shapes-FID against rendered scenes (random-tiny stands in for the model)."""
    from eval import cli
    from eval.shapes_scorer import WEIGHTS

    if not WEIGHTS.is_file():
        pytest.skip("shapes scorer weights missing")
    monkeypatch.setattr(cli, "load_pipeline", lambda model, device, dtype: dc.load_pipeline("random-tiny"))
    out = tmp_path / "r"
    assert main(["eval", "--model", "tiny", "--steps", "3", "--num-prompts", "4", "--schedules", "fora:2",
                 "--metrics", "fid,adherence", "--quiet", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = {r["variant"]: r for r in report["rows"]}
    for r in rows.values():
        assert 0.0 <= r["adherence"] <= r["attribute_accuracy"] <= 1.0 and r["adherence_detail"]["n"] == 4
        assert r["fid_vs_real"] > 0 and math.isfinite(r["fid_vs_real"])
    assert rows["uncached"]["fid_vs_uncached"] == pytest.approx(0.0, abs=1e-3)
    assert any("FID features: shapes" in n and "rendered" in n for n in report["notes"])
    # prompts that are not shapes captions cannot be scored for adherence
    (tmp_path / "p.txt").write_text("a photo of a cat\na dog\n")
    assert main(["eval", "--model", "tiny", "--prompts", str(tmp_path / "p.txt"), "--metrics", "adherence",
                 "--quiet", "--out", str(tmp_path / "x")]) == 2


def test_auto_metrics_skip_what_cannot_run_here_with_notes(monkeypatch):
    from eval.cli import EvalConfig
    from eval.score import setup_scorers

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sc = setup_scorers(EvalConfig(model="random-tiny"), False, ["a cat"], "cpu")
    assert {"fidelity", "latency"} <= sc.metrics and "adherence" not in sc.metrics
    notes = " ".join(sc.notes)
    assert "adherence skipped" in notes
    if "clip" not in sc.metrics:
        assert "clip skipped" in notes and "--clip-pretrained" in notes
    if "fid" not in sc.metrics:
        assert "fid skipped" in notes and "torch-fidelity" in notes
