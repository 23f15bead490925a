"""One model resolver and one caching-spec grammar (`dit_cache.resolve`), and the commands that use them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import dit_cache as dc
from dit_cache.cli import main
from dit_cache.schedule import ScheduleError
from dit_cache.zoo.tiny_random import DEFAULT_LAYERS, FAMILIES

from .conftest import DATA, ROOT

CONFIG = str(DATA / "pixart_alpha_256_transformer_config.json")


@pytest.fixture(scope="module")
def tiny():
    """The random-tiny PixArt and its schedule space."""
    model = dc.load_pipeline("random-tiny")
    return model, dc.space_of(model.pipe.transformer)


def _shipped():
    from dit_cache import zoo

    if not (zoo.ZOO_DIR / zoo.DEFAULT_MODEL / "model_index.json").exists():
        pytest.skip("shipped weights missing")
    return zoo


# ----------------------------------------------------------------------------- models
def test_import_stays_light_and_zoo_is_reachable():
    code = ("import sys, dit_cache as dc; assert 'dit_cache.zoo' not in sys.modules; "
            "assert 'diffusers.pipelines.pixart_alpha' not in sys.modules; print(dc.zoo.DEFAULT_MODEL)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "tiny-pixart-shapes"


def test_tiny_is_the_shipped_model_with_its_call_defaults():
    zoo = _shipped()
    model = dc.load_pipeline("tiny")
    assert isinstance(model.pipe, zoo.ShapesPixArtPipeline) and model.shapes and not model.random_weights
    assert (model.name, model.family, model.spec.kind) == ("tiny", "pixart", "tiny")
    assert model.call_defaults == {**zoo.CALL_KWARGS, "height": 32, "width": 32}


def test_shipped_model_pipe_prompt_just_works():
    """`dc.zoo.load()(prompt)` needs no kwargs; **CALL_KWARGS is optional and changes nothing."""
    _shipped()
    pipe = dc.zoo.load()
    prompt = "a small red circle in the top left"
    plain = pipe(prompt, generator=torch.Generator().manual_seed(3), num_inference_steps=3, output_type="pt").images
    kw = dict(dc.zoo.CALL_KWARGS, num_inference_steps=3)
    explicit = pipe(prompt, generator=torch.Generator().manual_seed(3), output_type="pt", **kw).images
    assert plain.shape == (1, 3, 32, 32) and torch.equal(plain, explicit)
    assert pipe(prompt, num_inference_steps=2).images[0].size == (32, 32)  # PIL, every default
    # explicit arguments win over the defaults
    big = pipe(prompt, num_inference_steps=2, height=64, width=64, output_type="pt").images
    assert big.shape == (1, 3, 64, 64)


def test_shipped_model_saved_folder_loads_in_plain_diffusers(tmp_path):
    _shipped()
    from diffusers import DiffusionPipeline, PixArtAlphaPipeline

    dc.zoo.load().save_pretrained(tmp_path / "copy")
    assert json.loads((tmp_path / "copy/model_index.json").read_text())["_class_name"] == "PixArtAlphaPipeline"
    assert type(DiffusionPipeline.from_pretrained(tmp_path / "copy")) is PixArtAlphaPipeline
    # a folder named like the shapes model gets the shipped call defaults
    dc.zoo.load().save_pretrained(tmp_path / "tiny-pixart-shapes-v9")
    model = dc.load_pipeline(str(tmp_path / "tiny-pixart-shapes-v9"))
    assert model.shapes and model.spec.kind == "folder" and model.call_defaults["height"] == 32


@pytest.mark.parametrize("family", FAMILIES)
def test_random_tiny_every_family_loads_and_runs_with_its_defaults(family):
    model = dc.load_pipeline(f"random-tiny:{family}")
    assert model.family == family and model.random_weights and not model.shapes
    assert model.name == f"random-tiny:{family}:{DEFAULT_LAYERS[family]}"
    assert "prompt" not in model.call_defaults and "generator" not in model.call_defaults
    (call,) = model.calls(["a red circle"], seed=0, steps=2)
    result = model.pipe(**call)
    out = result.frames if family == "wan" else result.images
    assert out is not None and len(out) == 1
    with dc.accelerate(model.pipe, dc.parse_spec("first-block:0.1")) as handle:
        model.pipe(**model.calls(["a red circle"], steps=2)[0])
        assert handle.stats.evaluations > 0


def test_random_tiny_layers_and_the_older_layer_count_form():
    two = dc.load_pipeline("random-tiny:pixart:2")
    assert two.name == "random-tiny:pixart:2" and two.pipe.transformer.config.num_layers == 2
    old = dc.parse_model_spec("random-tiny:3")  # accepted as random-tiny:pixart:3
    assert (old.name, old.family, old.layers) == ("random-tiny:pixart:3", "pixart", 3)
    assert dc.parse_model_spec("random-tiny").name == "random-tiny:pixart:4"
    assert dc.parse_model_spec("random-tiny:flux:1").layers == 1


@pytest.mark.parametrize("spec, message", [
    ("random-tiny:foo", "unknown random-tiny family 'foo'"),
    ("random-tiny:pixart:0", "LAYERS must be an integer >= 1"),
    ("random-tiny:flux:x", "LAYERS must be an integer >= 1"),
    ("random-tiny:pixart:2:3", "expected random-tiny[:FAMILY[:LAYERS]]"),
    ("random-tiny:", "expected random-tiny[:FAMILY[:LAYERS]]"),
])
def test_bad_random_tiny_specs_list_the_choices(spec, message):
    with pytest.raises(ValueError) as e:
        dc.parse_model_spec(spec)
    assert message in str(e.value) and repr(spec) in str(e.value)
    assert "pixart, dit, flux, sd3, wan" in str(e.value)


def test_a_saved_random_tiny_folder_loads_with_generic_defaults(tmp_path, tiny):
    model, _ = tiny
    model.pipe.save_pretrained(tmp_path / "pipe")
    folder = dc.load_pipeline(str(tmp_path / "pipe"))
    assert folder.spec.kind == "folder" and folder.family == "pixart" and not folder.shapes
    assert type(folder.pipe).__name__ == "PixArtAlphaPipeline"
    assert folder.call_defaults == {"num_inference_steps": 20, "use_resolution_binning": False, "clean_caption": False}
    kw = model.call_kwargs(2)  # the same weights give the same latents
    a = model.pipe(**model.calls(["a cat"], seed=1, steps=2)[0]).images
    b = folder.pipe(**folder.calls(["a cat"], seed=1, **kw)[0]).images
    assert torch.equal(a, b)


def test_folder_without_model_index_and_unknown_hub_id_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"has no model_index\.json"):
        dc.parse_model_spec(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError) as e:
        dc.load_pipeline("someone/not-cached")
    msg = str(e.value)
    assert "could not load 'someone/not-cached'" in msg and "random-tiny[:FAMILY[:LAYERS]]" in msg
    assert "HF_HUB_OFFLINE" in msg


def test_call_kwargs_overrides_and_class_conditional_prompts():
    model = dc.load_pipeline("random-tiny:dit")
    assert model.call_kwargs(5, 2.0, 8, 8)["num_inference_steps"] == 5
    kw = model.call_kwargs(guidance_scale=1.5)
    assert kw["guidance_scale"] == 1.5 and kw["num_inference_steps"] == 20
    calls = model.calls(["class3", "7", "any text"], seed=4)
    assert [c["class_labels"] for c in calls[:2]] == [[3], [7]]
    assert calls[2]["class_labels"] == dc.resolve.prompt_kwargs(model.pipe, ["any text"])["class_labels"]
    assert 0 <= calls[2]["class_labels"][0] < 10 and "prompt" not in calls[0]


# ----------------------------------------------------------------------------- caching specs
@pytest.mark.parametrize("text, cls, fields, name", [
    ("taylorseer", dc.TaylorSeerConfig, {"interval": 5, "order": 1, "warmup": 3}, "taylorseer-5"),
    ("taylorseer:4:2:2", dc.TaylorSeerConfig, {"interval": 4, "order": 2, "warmup": 2}, "taylorseer-4-o2-w2"),
    ("teacache:0.25", dc.TeaCacheConfig, {"threshold": 0.25, "profile": None}, "teacache-0.25"),
    ("first-block:0.1", dc.FirstBlockCacheConfig, {"threshold": 0.1}, "first-block-0.1"),
    ("delta-dit:4::8", dc.DeltaDiTConfig, {"interval": 4, "num_blocks": None, "boundary_step": 8}, "delta-dit-4-b8"),
    ("delta-dit:3:2", dc.DeltaDiTConfig, {"interval": 3, "num_blocks": 2, "boundary_step": 12}, "delta-dit-3-k2"),
    ("cg-taylor:0.05:1:1:2", dc.CGTaylorConfig, {"threshold": 0.05, "order_first": 1, "order_last": 1, "warmup": 2},
     "cg-taylor-0.05-w2"),
    ("cg-taylor:0.1:2", dc.CGTaylorConfig, {"threshold": 0.1, "order_first": 2, "warmup": 3}, "cg-taylor-0.1-of2"),
])
def test_backend_specs_round_trip_to_their_configs(text, cls, fields, name):
    spec = dc.resolve_spec(text)
    assert isinstance(spec.value, cls) and not spec.static and spec.name == name and spec.kind == text.split(":")[0]
    for k, v in fields.items():
        assert getattr(spec.value, k) == v, k
    assert dc.parse_spec(text) == spec.value


def test_profile_specs(tmp_path):
    prof = tmp_path / "erta_tiny.json"
    prof.write_text("{}")
    erta = dc.resolve_spec(f"erta:{prof}")
    assert erta.value == dc.ERTACacheConfig(str(prof)) and erta.name == "erta-erta_tiny"
    abl = dc.resolve_spec(f"erta:{prof}:uniform:off:on")
    assert (abl.value.select, abl.value.residual_correction, abl.value.interval_correction) == ("uniform", False, True)
    assert abl.name == "erta-erta_tiny-uniform-no-res"
    tea = dc.resolve_spec(f"teacache:0.5:{prof}")
    assert tea.value == dc.TeaCacheConfig(0.5, profile=str(prof)) and tea.name == "teacache-0.5-erta_tiny"
    held = {"reuse6": {"backend": "erta"}}  # in-memory profiles by name
    assert dc.parse_spec("erta:reuse6", profiles=held).profile is held["reuse6"]
    with pytest.raises(ScheduleError, match=r"profile file not found: nope\.json.*dit-cache profile --backend erta"):
        dc.resolve_spec("erta:nope.json")
    with pytest.raises(ScheduleError, match="erta needs PROFILE"):
        dc.resolve_spec("erta")


def test_static_specs_are_the_generators(tiny):
    _, space = tiny
    cases = {"all": dc.compute_all(space, 6), "fora:3": dc.fora(space, 6, 3), "fora:3:2": dc.fora(space, 6, 3, 2),
             "cache:ff:2": dc.cache_component(space, 6, "ff", 2), "random:0.3": dc.random_schedule(space, 6, 0.3),
             "random:0.3:5": dc.random_schedule(space, 6, 0.3, 5)}
    names = {"all": "compute-all", "fora:3": "fora-3", "fora:3:2": "fora-3-w2", "cache:ff:2": "cache-ff-2",
             "random:0.3": "random-p0.3-s0", "random:0.3:5": "random-p0.3-s5"}
    for text, want in cases.items():
        spec = dc.resolve_spec(text, space, 6)
        assert spec.static and spec.value == want and spec.name == names[text], text
    with pytest.raises(ValueError, match="static: resolving it needs the model's schedule space"):
        dc.resolve_spec("fora:2")


def test_file_specs(tmp_path, tiny):
    _, space = tiny
    dc.fora(space, 6, 2).save(tmp_path / "f2.json")
    spec = dc.resolve_spec(str(tmp_path / "f2.json"), space, 6)
    assert spec.kind == "file" and spec.name == "fora-2" and spec.value == dc.fora(space, 6, 2)
    dc.save_ecad(dc.fora(space, 6, 3).with_metadata(name="unnamed"), tmp_path / "e.json")
    ecad = dc.resolve_spec(str(tmp_path / "e.json"), space, 6)
    assert (ecad.value.compute == dc.fora(space, 6, 3).compute).all()
    with pytest.raises(ScheduleError, match="has 6 steps but --steps is 4; pass --steps 6 or --resample"):
        dc.resolve_spec(str(tmp_path / "f2.json"), space, 4)
    assert dc.resolve_spec(str(tmp_path / "f2.json"), space, 4, resample=True).value.steps == 4
    other = dc.space_of(dc.load_pipeline("random-tiny:pixart:2").pipe.transformer)
    with pytest.raises(ScheduleError, match="does not fit this model"):
        dc.resolve_spec(str(tmp_path / "f2.json"), other, 6)
    (tmp_path / "p.json").write_text(json.dumps({"format": "dit-cache-profile", "backend": "erta"}))
    with pytest.raises(ScheduleError, match=r"is a erta profile, not a schedule: use the spec erta:"):
        dc.resolve_spec(str(tmp_path / "p.json"), space, 6)


@pytest.mark.parametrize("text, message", [
    ("fora:x", "N 'x' is not an integer: fora:N[:WARMUP]"),
    ("fora", "fora needs N"),
    ("fora:2:1:1", "fora takes at most 2 field(s)"),
    ("foo:1", "unknown kind 'foo'"),
    ("first_block:0.1", "did you mean first-block?"),
    ("teacache:-1", "TeaCacheConfig.threshold must be >= 0"),
    ("taylorseer:0", "TaylorSeerConfig needs interval >= 1"),
    ("erta:x.json:maybe", "SELECT 'maybe' is not profile or uniform"),
    ("cg-taylor:abc", "TAU 'abc' is not a number"),
])
def test_bad_specs_name_the_spec_the_expectation_and_the_kinds(text, message, tmp_path, monkeypatch, tiny):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ScheduleError) as e:
        dc.resolve_spec(text, tiny[1], 6)
    msg = str(e.value)
    assert f"bad schedule spec {text!r}" in msg and message in msg
    assert "kinds: all, fora:N[:WARMUP]" in msg and "erta:PROFILE" in msg and "FILE.json" in msg


def test_missing_file_and_bad_component():
    with pytest.raises(ScheduleError, match=r"schedule file not found: nope\.json"):
        dc.resolve_spec("nope.json")
    space = dc.space_of(dc.load_pipeline("random-tiny:pixart:2").pipe.transformer)
    with pytest.raises(ScheduleError, match="bad schedule spec 'cache:mlp:2': unknown component 'mlp'"):
        dc.resolve_spec("cache:mlp:2", space, 4)


# ----------------------------------------------------------------------------- baselines
def test_one_list_of_baselines_in_one_spelling(tiny):
    _, space = tiny
    points = dc.baselines(20, 12)
    backends = {b.backend for b in points}
    assert backends == {"fora", "taylorseer", "delta-dit", "first-block", "teacache", "cg-taylor", "magcache", "erta"}
    assert all("_" not in b.spec.split(":")[0] for b in points)
    for name in backends - {"fora"}:
        assert sum(b.backend == name for b in points) >= 3, name
    profiles = {"calib": {}, "mag": {}, **{f"reuse{k}": {} for k in dc.resolve.erta_reuse_points(20)}}
    specs = [dc.resolve_spec(b.spec, space, 20, profiles=profiles) for b in points]
    assert len({s.name for s in specs}) == len(specs)  # distinct row labels
    assert not any(b.backend in ("teacache", "magcache", "erta") for b in dc.baselines(20, 12, profiled=False))
    assert [b.spec for b in dc.DEFAULT_BASELINES] == ["teacache", "first-block", "taylorseer", "delta-dit", "cg-taylor"]


def test_validate_and_the_benchmark_use_the_shared_baselines(tiny):
    import importlib.util

    from search.validate import baseline_variants, dynamic_sweep

    model, space = tiny
    names = [n for n, _ in dynamic_sweep(model.pipe, 6, [])]
    want = [dc.resolve_spec(b.spec, space, 6).name for b in dc.baselines(6, 4, profiled=False) if b.backend != "fora"]
    assert names == want
    defaults = baseline_variants(model.pipe, 6, True, None)
    assert [v[0] for v in defaults] == ["uncached", "fora-2", "fora-3", "fora-4", "teacache-0.25", "first-block-0.05",
                                       "taylorseer-5", "delta-dit-2", "cg-taylor-0.05"]
    spec = importlib.util.spec_from_file_location("bench_backends", ROOT / "benchmarks" / "backends.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    profiles = {"calib": {}, "mag": {}, **{f"reuse{k}": {} for k in dc.resolve.erta_reuse_points(6)}}
    pts = bench.operating_points(space, 6, profiles)
    assert [p[1] for p in pts if p[0] != "fora+forecast"] == [b.spec for b in dc.baselines(6, 4)]


# ----------------------------------------------------------------------------- commands
def test_eval_runs_backend_specs_next_to_static_ones(tmp_path):
    out = tmp_path / "r"
    assert main(["eval", "--model", "random-tiny", "--steps", "4", "--num-prompts", "2", "--batch-size", "1",
                 "--schedules", "teacache:0.25", "first-block:0.1", "fora:2", "--metrics", "fidelity",
                 "--repeats", "1", "--warmup", "0", "--quiet", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = {r["variant"]: r for r in report["rows"]}
    assert list(rows) == ["uncached", "teacache-0.25", "first-block-0.1", "fora-2"]
    for vid, (text, cls) in {"teacache-0.25": ("teacache:0.25", "TeaCacheConfig"),
                             "first-block-0.1": ("first-block:0.1", "FirstBlockCacheConfig")}.items():
        r = rows[vid]
        assert r["backend"] == cls and r["source"] == text
        assert 0 < r["compute_fraction"] <= 1 and r["macs_speedup"] >= 1.0
        assert r["macs_per_image"] == pytest.approx(rows["uncached"]["macs_per_image"] / r["macs_speedup"])
        for stem in ("p00000-s0", "p00001-s0"):  # counted on every batch
            assert json.loads((out / "samples" / vid / f"{stem}.json").read_text())["macs"]["executed"] > 0
    assert rows["fora-2"]["compute_fraction"] == 0.5
    assert report["config"]["call_kwargs"]["max_sequence_length"] == 32  # random-tiny's call defaults


def test_eval_overrides_steps_guidance_and_size(tmp_path):
    out = tmp_path / "o"
    assert main(["eval", "--model", "random-tiny:pixart:2", "--steps", "2", "--num-prompts", "1", "--schedules",
                 "all", "--guidance-scale", "2.0", "--height", "32", "--width", "32", "--metrics", "fidelity",
                 "--repeats", "1", "--warmup", "0", "--quiet", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    kw = report["config"]["call_kwargs"]
    assert (kw["num_inference_steps"], kw["guidance_scale"], kw["height"], kw["width"]) == (2, 2.0, 32, 32)


def test_eval_bad_model_spec_is_a_clear_error(tmp_path, capsys):
    assert main(["eval", "--model", "random-tiny:flux:zero", "--out", str(tmp_path)]) == 2
    assert "LAYERS must be an integer >= 1" in capsys.readouterr().err


def test_demo_takes_extra_specs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", "random-tiny", "--out", str(out), "--steps", "4", "--repeats", "1",
                 "--num-prompts", "2", "--schedule", "first-block:0.2", "--schedule", "fora:2:1"]) == 0
    rows = {r["schedule"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    assert {"first-block-0.2", "fora-2-w1"} <= set(rows) and rows["fora-2-w1"]["macs_speedup"] > 1.0
    assert main(["demo", "--model", "random-tiny", "--out", str(out), "--steps", "4", "--schedule", "fora:x"]) == 2
    assert "bad schedule spec 'fora:x'" in capsys.readouterr().err


def test_schedule_make_spec_and_the_older_flags_agree(tmp_path, capsys):
    from dit_cache.schedule import Schedule

    base = ["--family", "pixart", "--config", CONFIG]
    assert main(["schedule", "make", "fora:3:2", *base, "-o", str(tmp_path / "a.json")]) == 0
    assert main(["schedule", "make", *base, "--kind", "fora", "--interval", "3", "--warmup", "2",
                 "-o", str(tmp_path / "b.json")]) == 0
    a, b = Schedule.load(tmp_path / "a.json"), Schedule.load(tmp_path / "b.json")
    assert a == b and a.name == "fora-3-w2"
    assert main(["schedule", "make", "cache:ff:2", *base, "--steps", "8", "-o", str(tmp_path / "c.json")]) == 0
    assert Schedule.load(tmp_path / "c.json").name == "cache-ff-2" and Schedule.load(tmp_path / "c.json").steps == 8
    assert main(["schedule", "make", *base, "-o", str(tmp_path / "d.json")]) == 0  # default: fora:2
    assert Schedule.load(tmp_path / "d.json").name == "fora-2"
    capsys.readouterr()
    assert main(["schedule", "make", "teacache:0.25", *base, "-o", str(tmp_path / "t.json")]) == 2
    assert "dynamic backend" in capsys.readouterr().err and not (tmp_path / "t.json").exists()
    assert main(["schedule", "make", "fora:3", "--kind", "fora", *base, "-o", str(tmp_path / "x.json")]) == 2
    assert "either a SPEC or --kind" in capsys.readouterr().err
    assert main(["schedule", "make", "fora:3", "--interval", "2", *base, "-o", str(tmp_path / "x.json")]) == 2
    assert "the SPEC carries the settings" in capsys.readouterr().err
    assert main(["schedule", "make", "fora:y", *base, "-o", str(tmp_path / "x.json")]) == 2
    assert "bad schedule spec 'fora:y'" in capsys.readouterr().err


def test_profile_command_takes_any_model_spec(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\na blue square\n")
    out = tmp_path / "tea.json"
    assert main(["profile", "--backend", "teacache", "--model", "random-tiny:flux", "--prompts", str(prompts),
                 "--steps", "3", "--out", str(out)]) == 0
    prof = json.loads(out.read_text())
    assert prof["family"] == "flux" and prof["steps"] == 3
    spec = dc.resolve_spec(f"teacache:0.25:{out}")
    assert spec.value.profile == str(out)
