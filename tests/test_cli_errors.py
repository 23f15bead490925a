"""Bad input to every `dit-cache` subcommand gives one `error:` line on stderr and exit code 2, never a traceback,
and output places are checked before any work (issue #17)."""

from __future__ import annotations

import json
import os

import pytest

import dit_cache as dc
from dit_cache.cli import main
from dit_cache.io import OutLock

from .conftest import DATA

CONFIG = str(DATA / "pixart_alpha_256_transformer_config.json")
PIXART = ["--family", "pixart", "--config", CONFIG]
EVAL = ["eval", "--model", "random-tiny", "--steps", "2", "--num-prompts", "1", "--quiet", "--metrics", "fidelity",
        "--schedules", "fora:2"]
DEMO = ["demo", "--model", "random-tiny", "--steps", "4", "--repeats", "1", "--num-prompts", "1"]
SEARCH = ["search", "--model", "random-tiny", "--steps", "2", "--num-prompts", "1", "--population", "4",
          "--generations", "0", "--quiet"]


def _one_error(capsys, rc: int, *needles: str) -> str:
    """Exit 2 and one `error:` line on stderr (no traceback) containing every needle; returns the line."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture
def files(tmp_path):
    """A regular file (`f.txt`), a prompt file and a valid schedule / ECAD file for the pixart config."""
    (tmp_path / "f.txt").write_text("not a folder\n")
    (tmp_path / "prompts.txt").write_text("a red circle\na blue square\n")
    (tmp_path / "junk.json").write_text("{not json")
    assert main(["schedule", "make", "fora:2", *PIXART, "-o", str(tmp_path / "fora2.json")]) == 0
    assert main(["schedule", "export-ecad", str(tmp_path / "fora2.json"), "-o", str(tmp_path / "fora2.ecad.json")]) == 0
    return tmp_path


CASES = [  # (argv with {t} = the tmp folder, needles in the message)
    # macs
    (["macs", "--family", "pixart", "--config", "{t}/missing.json"], ["missing.json"]),
    (["macs", *PIXART, "--steps", "0"], ["--steps must be >= 1"]),
    (["macs", *PIXART, "--height", "-3"], ["--height must be >= 1"]),
    (["macs", *PIXART, "--batch", "x"], ["--batch expected an integer"]),
    (["macs", *PIXART, "--schedule", "{t}/missing.json"], ["missing.json"]),
    (["macs", *PIXART, "--schedule", "{t}/junk.json"], ["junk.json"]),
    (["macs", "--family", "nope", "--config", CONFIG], ["--family"]),
    # schedule make / show / check / transfer / import-ecad / export-ecad
    (["schedule", "make", "fora:2", *PIXART, "-o", "{t}/f.txt/x.json"], ["--out", "is a file"]),
    (["schedule", "make", "fora:2", *PIXART, "-o", "{t}"], ["is a folder"]),
    (["schedule", "make", "fora:2", *PIXART, "--steps", "0", "-o", "{t}/x.json"], ["--steps must be >= 1"]),
    (["schedule", "make", "--kind", "fora", "--interval", "0", *PIXART, "-o", "{t}/x.json"], ["--interval"]),
    (["schedule", "make", "fora:zz", *PIXART, "-o", "{t}/x.json"], ["fora:zz"]),
    (["schedule", "show", "{t}/missing.json"], ["missing.json"]),
    (["schedule", "show", "{t}/junk.json"], ["junk.json"]),
    (["schedule", "check", "{t}/fora2.json", "--config", CONFIG], ["--family"]),
    (["schedule", "check", "{t}/fora2.json", "--family", "pixart"], ["--config"]),
    (["schedule", "check", "{t}/missing.json"], ["missing.json"]),
    (["schedule", "transfer", "{t}/missing.json", "--steps", "10", "-o", "{t}/x.json"], ["missing.json"]),
    (["schedule", "transfer", "{t}/fora2.json", "-o", "{t}/x.json"], ["nothing to transfer to"]),
    (["schedule", "transfer", "{t}/fora2.json", "--steps", "0", "-o", "{t}/x.json"], ["--steps must be >= 1"]),
    (["schedule", "transfer", "{t}/fora2.json", "--steps", "10", "-o", "{t}"], ["is a folder"]),
    (["schedule", "transfer", "{t}/fora2.json", "--model", "random-tiny:sd3", "-o", "{t}/x.json"],
     ["another block count of its family"]),
    (["schedule", "transfer", "{t}/fora2.json", "--model", "tiny", *PIXART, "-o", "{t}/x.json"], ["not both"]),
    (["schedule", "import-ecad", "{t}/missing.json", "-o", "{t}/x.json"], ["missing.json"]),
    (["schedule", "import-ecad", "{t}/fora2.ecad.json", "-o", "{t}/f.txt/x.json"], ["is a file"]),
    (["schedule", "export-ecad", "{t}/missing.json", "-o", "{t}/x.json"], ["missing.json"]),
    (["schedule", "export-ecad", "{t}/fora2.json", "-o", "{t}"], ["is a folder"]),
    # profile
    (["profile", "--backend", "erta", "--model", "random-tiny", "--prompts", "{t}/missing.txt", "-o", "{t}/p.json"],
     ["missing.txt"]),
    (["profile", "--backend", "erta", "--model", "random-tiny", "--prompts", "{t}/prompts.txt", "-o", "{t}"],
     ["is a folder"]),
    (["profile", "--backend", "teacache", "--model", "random-tiny", "--prompts", "{t}/prompts.txt",
      "-o", "{t}/f.txt/p.json"], ["is a file"]),
    (["profile", "--backend", "erta", "--prompts", "{t}/prompts.txt", "-o", "{t}/p.json", "--limit", "0"],
     ["--limit must be >= 1"]),
    (["profile", "--backend", "erta", "--prompts", "{t}/prompts.txt", "-o", "{t}/p.json", "--steps", "0"],
     ["--steps must be >= 1"]),
    (["profile", "--backend", "nope", "--prompts", "{t}/prompts.txt", "-o", "{t}/p.json"], ["--backend"]),
    # eval
    ([*EVAL, "--out", "{t}/f.txt/report"], ["--out", "is a file"]),
    ([*EVAL, "--out", "{t}/o", "--steps", "0"], ["--steps must be >= 1"]),
    ([*EVAL, "--out", "{t}/o", "--num-prompts", "0"], ["--num-prompts must be >= 1"]),
    ([*EVAL, "--out", "{t}/o", "--seeds", "0"], ["--seeds must be >= 1"]),
    ([*EVAL, "--out", "{t}/o", "--repeats", "0"], ["--repeats must be >= 1"]),
    ([*EVAL, "--out", "{t}/o", "--warmup", "-1"], ["--warmup must be >= 0"]),
    ([*EVAL, "--out", "{t}/o", "--prompts", "{t}/missing.txt"], ["missing.txt"]),
    ([*EVAL, "--out", "{t}/o", "--schedules", "{t}/missing.json"], ["missing.json"]),
    ([*EVAL, "--out", "{t}/o", "--metrics", "speed"], ["speed"]),
    # demo
    ([*DEMO, "--out", "{t}/f.txt/demo"], ["--out", "is a file"]),
    ([*DEMO, "--out", "{t}/d", "--steps", "0"], ["--steps must be >= 1"]),
    ([*DEMO, "--out", "{t}/d", "--repeats", "0"], ["--repeats must be >= 1"]),
    ([*DEMO, "--out", "{t}/d", "--num-prompts", "0"], ["--num-prompts must be >= 1"]),
    ([*DEMO, "--out", "{t}/d", "--schedule", "{t}/missing.json"], ["missing.json"]),
    # search
    ([*SEARCH, "--out", "{t}/s", "--batch-size", "0"], ["--batch-size must be >= 1"]),
    ([*SEARCH, "--out", "{t}/s", "--memory-budget-mb", "-5"], ["--memory-budget-mb must be >= 0"]),
    ([*SEARCH, "--out", "{t}/s", "--num-prompts", "0"], ["--num-prompts must be >= 1"]),
    ([*SEARCH, "--out", "{t}/s", "--workers", "0"], ["--workers must be >= 1"]),
    ([*SEARCH, "--out", "{t}/f.txt/s"], ["--out", "is a file"]),
    ([*SEARCH, "--out", "{t}/s", "--prompts", "{t}/missing.txt"], ["missing.txt"]),
]


@pytest.mark.parametrize("argv, needles", CASES, ids=[" ".join(a[:3]) + f" #{i}" for i, (a, _) in enumerate(CASES)])
def test_bad_input_gives_one_error_line(argv, needles, files, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    capsys.readouterr()
    rc = main([a.replace("{t}", str(files)) for a in argv])
    _one_error(capsys, rc, *needles)
    assert not (files / "f.txt").is_dir()


def test_every_listed_command_is_covered():
    """Each subcommand of `dit-cache --help` has a bad-input case above."""
    from dit_cache.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    covered = {a[0] for a, _ in CASES} | {" ".join(a[:2]) for a, _ in CASES}
    for name, parser in sub.choices.items():
        actions = [a for a in parser._actions if a.dest == "schedule_command"]
        names = [f"{name} {s}" for s in actions[0].choices] if actions else [name]
        assert all(n in covered for n in names), names


def test_output_checked_before_any_work(files, capsys, monkeypatch):
    """profile -o / eval --out that cannot be written fail before the model is even loaded."""
    import dit_cache.cli as cli
    import eval.cli as ecli

    def boom(*_a, **_k):
        raise AssertionError("work started before the output place was checked")

    monkeypatch.setattr(cli, "_pipeline_and_calls", boom)
    monkeypatch.setattr(ecli, "load_pipeline", boom)
    rc = main(["profile", "--backend", "erta", "--model", "random-tiny", "--prompts", str(files / "prompts.txt"),
               "-o", str(files)])
    _one_error(capsys, rc, "is a folder")
    rc = main([*EVAL, "--out", str(files / "f.txt" / "report")])
    _one_error(capsys, rc, str(files / "f.txt"), "is a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_out(files, capsys):
    ro = files / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc = main([*EVAL, "--out", str(ro / "report")])
        _one_error(capsys, rc, "cannot write")
        rc = main(["schedule", "make", "fora:2", *PIXART, "-o", str(ro / "x.json")])
        _one_error(capsys, rc, "cannot write")
    finally:
        ro.chmod(0o700)


def test_eval_into_a_locked_out_folder(tmp_path, capsys):
    out = tmp_path / "busy"
    with OutLock(out):
        rc = main([*EVAL, "--out", str(out)])
        _one_error(capsys, rc, "another run is writing into", str(out))
    assert not (out / "samples").exists()


def test_eval_regenerates_a_truncated_sample(tmp_path, capsys):
    out = tmp_path / "o"
    assert main([*EVAL, "--out", str(out)]) == 0
    npz = out / "samples" / "fora-2" / "p00000-s0.npz"
    good = npz.read_bytes()
    npz.write_bytes(good[: len(good) // 2])  # a half-written finished sample (disk full, copied folder, ...)
    assert main([*EVAL, "--out", str(out)]) == 0
    assert npz.read_bytes() == good  # regenerated, bit-identical
    report = json.loads((out / "report.json").read_text())
    assert report["generation"]["generated_by_main"] == 1


def test_demo_schedule_named_like_a_builtin_keeps_the_builtins(tmp_path, capsys):
    space = dc.space_of(dc.load_pipeline("random-tiny").pipe.transformer)
    mine = dc.cache_component(space, 4, "ff", 2)
    as_uncached = mine.with_metadata(name="uncached").save(tmp_path / "uncached.json")
    as_fora = mine.with_metadata(name="fora-2").save(tmp_path / "fora-2.json")
    out = tmp_path / "demo"
    assert main([*DEMO, "--out", str(out), "--schedule", str(as_uncached), "--schedule", str(as_fora)]) == 0
    rows = {r["schedule"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    assert set(rows) == {"uncached", "fora-2", "fora-3", "fora-4", "uncached (uncached.json)", "fora-2 (fora-2.json)"}
    assert rows["uncached"]["latent_mse"] == 0 and rows["uncached"]["macs_speedup"] == 1.0  # the real baseline
    assert rows["uncached (uncached.json)"]["latent_mse"] > 0
    assert rows["fora-2 (fora-2.json)"]["macs_speedup"] < rows["fora-2"]["macs_speedup"]
