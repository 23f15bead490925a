"""The `dit-cache` command line: help texts, macs, schedule tools, demo plumbing, offline errors."""

from __future__ import annotations

import json
import warnings

import pytest

from dit_cache.cli import build_parser, main
from dit_cache.schedule import Schedule, ScheduleWarning

from .conftest import DATA

CONFIG = str(DATA / "pixart_alpha_256_transformer_config.json")


def test_top_level_help_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for cmd in ("macs", "schedule", "demo"):
        assert cmd in out


@pytest.mark.parametrize(
    "argv",
    [["macs"], ["schedule"], ["schedule", "make"], ["schedule", "show"], ["schedule", "import-ecad"],
     ["schedule", "export-ecad"], ["schedule", "check"], ["demo"]],
)
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([*argv, "--help"])
    assert e.value.code == 0 and "usage: dit-cache" in capsys.readouterr().out


def test_macs_reproduces_ecad_total(shared, capsys):
    path = shared / "ecad_schedules/pixart_alpha_256/ours_faster.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScheduleWarning)
        rc = main(["macs", "--family", "pixart", "--config", CONFIG, "--convention", "ecad", "--schedule", str(path), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["total_macs"] == report["ecad_reported_total_macs"] == 1_455_554_691_072
    assert report["macs_per_full_step"] == 285_689_806_848 and len(report["macs_per_step"]) == 20


def test_schedule_make_show_export_import_check(tmp_path, capsys):
    made, ecad, back = tmp_path / "f3.json", tmp_path / "f3.ecad.json", tmp_path / "f3.back.json"
    base = ["--family", "pixart", "--config", CONFIG]
    assert main(["schedule", "make", *base, "--kind", "fora", "--interval", "3", "-o", str(made)]) == 0
    assert main(["schedule", "show", str(made)]) == 0
    shown = capsys.readouterr().out
    assert "fora-3" in shown and "█░░█░░█" in shown
    assert main(["schedule", "export-ecad", str(made), "-o", str(ecad)]) == 0
    assert main(["schedule", "import-ecad", str(ecad), "-o", str(back)]) == 0
    a, b = Schedule.load(made), Schedule.load(back)
    assert (a.compute == b.compute).all() and a.space == b.space
    assert main(["schedule", "check", str(made), *base]) == 0
    assert main(["macs", *base, "--schedule", str(made)]) == 0
    assert "fewer than compute-all" in capsys.readouterr().out


def test_schedule_that_does_not_fit_the_config(tmp_path, capsys):
    cfg = json.loads((DATA / "pixart_alpha_256_transformer_config.json").read_text())
    cfg["num_layers"] = 12
    small = tmp_path / "small.json"
    small.write_text(json.dumps(cfg))
    made = tmp_path / "s.json"
    main(["schedule", "make", "--family", "pixart", "--config", CONFIG, "--kind", "fora", "-o", str(made)])
    assert main(["schedule", "check", str(made), "--family", "pixart", "--config", str(small)]) == 2
    assert "the schedule has 28 blocks (0..27) but the model has 12 (0..11)" in capsys.readouterr().err
    assert main(["macs", "--family", "pixart", "--config", CONFIG, "--schedule", str(made), "--steps", "25"]) == 2
    assert "the schedule has 20 steps but --steps is 25" in capsys.readouterr().err


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
    assert main(["schedule", "show", str(tmp_path / "missing.json")]) == 2
    assert "schedule file not found" in capsys.readouterr().err
    assert main(["schedule", "make", "--family", "pixart", "--config", CONFIG, "--kind", "cache-component",
                 "--component", "mlp", "-o", str(tmp_path / "x.json")]) == 2
    assert "unknown component 'mlp'" in capsys.readouterr().err


def test_hub_id_offline_names_the_fix(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["macs", "--family", "pixart", "--config", "PixArt-alpha/PixArt-XL-2-256x256"])
    err = capsys.readouterr().err
    assert rc == 2 and "could not read the transformer config" in err and "pass the file path" in err


def test_demo_plumbing_on_random_tiny(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", "random-tiny", "--out", str(out), "--steps", "4", "--repeats", "1",
                 "--num-prompts", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = {r["schedule"]: r for r in report["rows"]}
    assert set(rows) == {"uncached", "fora-2", "fora-3", "fora-4"}
    assert rows["uncached"]["latent_mse"] == 0 and rows["fora-2"]["latent_mse"] > 0
    assert rows["fora-2"]["macs_speedup"] > 1.4 and rows["fora-4"]["macs_speedup"] > rows["fora-2"]["macs_speedup"]
    assert (out / "grid.png").stat().st_size > 0 and "| fora-3 |" in capsys.readouterr().out


def test_demo_runs_extra_schedule_files_and_rejects_mismatches(tmp_path, capsys):
    import dit_cache as dc

    space = dc.space_of(dc.load_pipeline("random-tiny").pipe.transformer)
    good = dc.cache_component(space, 4, "ff", 2).save(tmp_path / "ff2.json")
    out = tmp_path / "demo"
    assert main(["demo", "--model", "random-tiny", "--out", str(out), "--steps", "4", "--repeats", "1",
                 "--num-prompts", "2", "--schedule", str(good)]) == 0
    rows = {r["schedule"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    name = dc.Schedule.load(good).name
    assert name in rows and 1.0 < rows[name]["macs_speedup"] < rows["fora-2"]["macs_speedup"]
    wrong = dc.fora(space, 6, 2).save(tmp_path / "six.json")
    capsys.readouterr()
    assert main(["demo", "--model", "random-tiny", "--out", str(out), "--steps", "4", "--schedule", str(wrong)]) == 2
    assert "--steps 6" in capsys.readouterr().err
