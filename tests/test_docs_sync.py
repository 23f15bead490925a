"""The numbers quoted in README.md and the docs are the ones in the result files they cite.

Each table is re-rendered from its JSON with the same function that printed it, so a re-measurement
that is not copied into the docs (or a hand edit of a quoted number) fails here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = (ROOT / "README.md").read_text()


def _load(name: str) -> dict:
    """A JSON result file."""
    return json.loads((RESULTS / name).read_text())


@pytest.mark.parametrize("result", ["demo.json", "demo_tiny_flux.json"])
def test_readme_demo_table_is_demo_json(result: str) -> None:
    from eval.demo import format_table

    assert format_table(_load(result)["rows"]) in README


@pytest.mark.parametrize("name", ["backends", "backends_tiny_flux"])
def test_readme_backends_table_is_backends_json(name: str) -> None:
    spec = importlib.util.spec_from_file_location("bench_backends", ROOT / "benchmarks" / "backends.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    table = mod.table(_load(f"{name}.json")["points"])
    assert table in README
    assert table in (RESULTS / f"{name}.md").read_text()


def test_readme_tiny_flux_backends_prose_is_its_json() -> None:
    pts = {p["setting"]: p for p in _load("backends_tiny_flux.json")["points"] if p["backend"] != "erta-ablation"}
    for setting, x, db in [("cg-taylor:0.05:1:1:2", 1.91, 59.8), ("erta:reuse10", 1.99, 57.8), ("teacache:0.25:calib", 3.03, 42.8),
                           ("first-block:0.4", 3.11, 42.7), ("fora:4", 3.91, 36.2), ("taylorseer:2:1:2", 1.81, 59.3)]:
        assert f"{pts[setting]['macs_speedup']:.2f}" == f"{x:.2f}" and f"{pts[setting]['psnr']:.1f}" == f"{db:.1f}", setting
        assert f"{x:.2f}×, {db:.1f} dB" in README or f"{db:.1f} dB at {x:.2f}×" in README, setting


@pytest.mark.parametrize("suffix", ["", "_tiny_flux", "_tiny_flux_cfg"])
def test_search_validation_markdown_is_its_json(suffix: str) -> None:
    from search.validate import to_markdown

    md = (ROOT / "docs" / f"search_validation_shapes{suffix}.md").read_text()
    assert md.strip() == to_markdown(_load(f"search_validation_shapes{suffix}.json")).strip()


def test_readme_search_summary_is_history_json() -> None:
    h = _load("search_shapes_history.json")
    assert f"{h['evaluations']:,} schedules evaluated" in README
    assert f"block evaluations {h['prefix_sharing_saving']:.2f}×" in README
    assert f"{h['wall_s'] / 60:.0f}-minute search" in README


def test_search_md_tiny_flux_run_is_its_history_json() -> None:
    h = _load("search_shapes_history_tiny_flux.json")
    doc = (ROOT / "docs" / "search.md").read_text()
    assert f"{h['evaluations']:,}\nschedules evaluated" in doc or f"{h['evaluations']:,} schedules evaluated" in doc
    assert f"{h['block_evals']:,} with prefix sharing vs\n{h['block_evals_naive']:,} naive = {h['prefix_sharing_saving']:.2f}×" in doc
    assert f"Wall {h['wall_s'] / 60:.1f} min" in doc
    rows = {r["variant"]: r for r in _load("search_validation_shapes_tiny_flux.json")["rows"]}
    for name in ("search-30-3.21x", "search-34-2.81x", "search-06-6.56x", "fora-3", "erta-reuse13", "cg-taylor-0.05-w2",
                 "teacache-0.1-calib", "first-block-0.4"):
        assert f"{rows[name]['psnr_db']:.2f}" in doc, name
    cfg = {r["variant"]: r for r in _load("search_validation_shapes_tiny_flux_cfg.json")["rows"]}
    for name in ("search-19-3.81x", "first-block-0.4", "fora-4", "search-40-1.81x", "taylorseer-2-w2", "search-03-6.56x",
                 "erta-reuse13", "search-22-2.87x", "cg-taylor-0.05-w2"):
        assert f"{cfg[name]['psnr_db']:.2f} dB" in README, name  # README summary of the true-CFG search
    assert f"adherence {100 * cfg['search-03-6.56x']['adherence']:.1f} % (uncached {100 * cfg['uncached']['adherence']:.1f} %)" in README


def test_readme_hook_overhead_tiny_flux_is_its_json() -> None:
    r = _load("hook_overhead_tiny_flux.json")["results"]
    ca, f2 = r["compute-all"], r["fora-2"]
    assert f"compute-all hooks +{100 * ca['overhead']:.1f} % by medians, +{100 * ca['paired_overhead']:.1f} %" in README
    assert f"fora-2 wall/ideal {f2['wall_over_ideal']:.2f} (paired {f2['paired_wall_over_ideal']:.2f})" in README
    assert f"random-60 % {r['random-60%-reuse']['wall_over_ideal']:.2f}" in README


def test_search_cost_table_is_its_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import search_cost

    res = _load("search_cost.json")
    assert search_cost.table(res) in (ROOT / "docs" / "search.md").read_text()
    assert res["naive_check"]["fronts_equal"] and res["naive_check"]["block_evals_equal_recount"]
    naive, dflt = res["runs"]["naive-s0"]["curve"][-1][0], res["runs"]["defaults-s0"]["curve"][-1][0]
    assert f"saves only {naive / dflt:.2f}×" in (ROOT / "docs" / "search.md").read_text()


def test_readme_eval_table_is_the_report() -> None:
    report = (ROOT / "docs" / "eval_report_tiny" / "report.md").read_text().splitlines()
    rows = [ln for ln in report if ln.startswith("| ")]
    assert len(rows) >= 3
    missing = [r for r in rows if r not in README]
    assert not missing, missing


@pytest.mark.parametrize("model", ["tiny-pixart-shapes", "tiny-flux-shapes"])
@pytest.mark.parametrize("doc", ["README", "TRAINING"])
def test_model_adherence_rows_are_evaluation_json(doc: str, model: str) -> None:
    zoo = ROOT / "dit_cache" / "zoo" / model
    ev = json.loads((zoo / "evaluation.json").read_text())
    text = README if doc == "README" else (zoo / "TRAINING.md").read_text()
    for key in ("trained", "initial", "trained_two_objects"):
        if key not in ev:
            continue
        r = ev[key]
        den = r["n"] * (2 if key == "trained_two_objects" else 1)  # attributes averaged over the objects
        exact = [round(r[a] * den) / den for a in ("color", "shape", "size", "position")]  # k/n, not 4-digit
        cells = " | ".join(f"{v:.3f}" for v in exact)
        assert cells in text, (key, cells)
        if "shapes_fid" in r:
            assert f"{r['shapes_fid']:.1f}" in text, (key, r["shapes_fid"])


def test_readme_resample_table_is_resample_json() -> None:
    spec = importlib.util.spec_from_file_location("bench_resample", ROOT / "benchmarks" / "resample.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    table = mod.table(_load("resample.json")["rows"])
    assert table in README and table == (RESULTS / "resample.md").read_text()


def test_search_families_table_is_its_json() -> None:
    """docs/search.md's per-family plumbing table is benchmarks/results/search_families.json, re-rendered; each
    family's run met the acceptance bar (≥ 2.5× prefix-sharing saving, front MACs reproduced by the runtime)."""
    spec = importlib.util.spec_from_file_location("bench_search_families", ROOT / "benchmarks" / "search_families.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = _load("search_families.json")
    table = mod.table(res["rows"])
    assert table == res["table_md"] and table in (ROOT / "docs" / "search.md").read_text()
    assert sorted(r["family"] for r in res["rows"]) == sorted(mod.FAMILIES)
    assert res["settings"]["generations"] >= 6
    assert all(r["prefix_sharing_saving"] >= 2.5 and r["front_macs_reproduced"] for r in res["rows"])


def test_transfer_table_is_its_json() -> None:
    spec = importlib.util.spec_from_file_location("bench_transfer", ROOT / "benchmarks" / "transfer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    table = mod.table(_load("transfer.json")["rows"])
    assert table == (RESULTS / "transfer.md").read_text() and table in (ROOT / "docs" / "search.md").read_text()
    assert sorted({r["steps"] for r in _load("transfer.json")["rows"]}) == [10, 15, 30, 50]


def test_readme_compile_table_is_compile_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # compile.py imports its sibling benchmarks
    spec = importlib.util.spec_from_file_location("bench_compile", ROOT / "benchmarks" / "compile.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    report = _load("compile.json")
    assert mod.table(report["rows"]) in README
    assert f"the run took {report['wall_s'] / 60:.0f} minutes" in README
    assert {r["graph_breaks"] for r in report["rows"]} == {0}  # the README says every variant has 0 breaks
    assert max(r["max_abs_diff_vs_eager"] for r in report["rows"]) <= 7.5e-4  # and says this bound
    emb, mid = _load("compile_block_reuse.json"), _load("compile_block_reuse_midsize.json")
    assert mod.table(emb["rows"] + mid["rows"]) in README  # the block-reuse table
    old_c, new_c = report["probes"]["midsize"]["blocks"]["unhooked"], mid["probes"]["midsize"]["blocks"]["unhooked"]
    assert f"took {old_c['compile_s']:.1f} s there, {new_c['compile_s']:.1f} s here" in README
    assert f"{emb['wall_s'] / 60:.0f} and {mid['wall_s'] / 60:.0f} minutes" in README
    walls = {(r["model"], r["variant"]): r["compiled_wall_over_mac"] for r in emb["rows"] + mid["rows"] if r["variant"] != "unhooked"}
    assert f"**{min(v for (m, _), v in walls.items() if m == 'midsize'):.2f}–{max(v for (m, _), v in walls.items() if m == 'midsize'):.2f}**" in README


def test_readme_compile_auto_table_is_its_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """compile() with scope "auto": the README table and the numbers quoted under it are compile_auto.json's."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_compile", ROOT / "benchmarks" / "compile.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    d = _load("compile_auto.json")
    assert mod.table(d["rows"]) in README and f"ECAD semantics; {d['wall_s'] / 60:.0f} minutes" in README
    r = {(x["model"], x["variant"]): x for x in d["rows"]}
    learned, fora = r["midsize", "learned-3.16x"], r["midsize", "fora-2"]
    assert learned["compiled_scope"] == "blocks" and fora["compiled_scope"] == "model"
    assert (f"reaches **{learned['compiled_wall_over_mac']:.2f}** of its MAC speedup and\n  compiles in "
            f"**{learned['compile_over_unhooked']:.2f}×**") in README
    assert f"FORA-2, compiled whole, {fora['compiled_wall_over_mac']:.2f} at {fora['compile_over_unhooked']:.2f}×" in README
    mid = [x for x in d["rows"] if x["model"] == "midsize"]  # "meets both compile goals": the README says so
    assert min(x["compiled_wall_over_mac"] for x in mid) >= 0.9 and max(x["compile_over_unhooked"] for x in mid) <= 2.0
    emb = [x for x in d["rows"] if x["model"] == "embedded" and x["variant"] != "unhooked"]
    lo, hi = min(x["compiled_wall_over_mac"] for x in emb), max(x["compiled_wall_over_mac"] for x in emb)
    assert f"wall / MACs stays {lo:.2f}–{hi:.2f}" in README
    assert f"≤ {max(x['compile_over_unhooked'] for x in emb):.2f}× the unhooked one" in README
    unhooked, f4 = r["embedded", "unhooked"]["compiled_s"], r["embedded", "fora-4"]
    full, skip = unhooked / 20, (f4["compiled_s"] - 5 * unhooked / 20) / 15  # FORA-4: 5 full, 15 skipped steps
    mac = (20 / f4["mac_speedup"] - 5) / 15
    assert (f"{1e3 * skip:.2f} ms, {100 * skip / full:.1f} % of a full step, for {100 * mac:.1f} % of a step's MACs"
            in README)
    assert {x["graph_breaks"] for x in d["rows"]} == {0}
    blocks = _load("compile_blocks_midsize.json")
    assert mod.table(blocks["rows"]) in README and f"compile_blocks_midsize.json` ({blocks['wall_s'] / 60:.0f} minutes)" in README
    rb = {x["variant"]: x for x in blocks["rows"]}
    f2, l3 = rb["fora-2"], rb["learned-3.16x"]
    assert (f"FORA-2 reaches {f2['compiled_wall_over_mac']:.2f} of its MAC speedup at {f2['compile_over_unhooked']:.2f}× the "
            f"unhooked compile time and learned-3.16x\n{l3['compiled_wall_over_mac']:.2f} at {l3['compile_over_unhooked']:.2f}×") in README
    assert min(x["compiled_wall_over_mac"] for x in blocks["rows"]) >= 0.9  # "both goals": the README says so
    assert max(x["compile_over_unhooked"] for x in blocks["rows"]) <= 2.0


def test_readme_compile_bound_is_its_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """What any cache could reach: the README tables and quoted numbers are compile_bound.json's, and its rows
    are the bound applied to the compile JSONs as they are now."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_compile_bound", ROOT / "benchmarks" / "compile_bound.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    d = _load("compile_bound.json")
    assert d["rows"] == mod.rows(d["models"])  # re-derived from compile_auto.json / compile_blocks_midsize.json
    assert mod.table(d) in README
    assert f"compile_bound.json`; {d['wall_s'] / 60:.0f} minutes, {d['repeats']} interleaved generations" in README
    m, auto = d["models"]["embedded"], {(r["model"], r["variant"]): r for r in _load("compile_auto.json")["rows"]}
    f4 = next(r for r in d["rows"] if r["source"] == "compile_auto.json" and r["variant"] == "fora-4")
    hooks = (m["U_hooked_s"] - m["U_s"]) / 20
    u, h = auto["embedded", "unhooked"]["compiled_s"], auto["embedded", "fora-4"]["compiled_s"]
    gap = h - u / (f4["best_wall_over_mac"] * f4["mac_speedup"])
    assert (f"take {100 * m['U_bare_s'] / m['U_s']:.1f} % of the wall for\n  {100 * (1 - m['beta']):.2f} % of the MACs, "
            f"so even a free cache reaches only {f4['best_wall_over_mac']:.2f} of FORA-4's\n  MAC speedup; ours reaches "
            f"{f4['measured_wall_over_mac']:.2f}") in README
    assert (f"cost {1e3 * hooks:.2f} ms a call, {1e3 * hooks * 20:.1f} ms a generation: as much as FORA-4\n  would save "
            f"if it reached the bound ({1e3 * gap:.1f} ms of its {h:.3f} s)") in README
    mid = min(r["best_wall_over_mac"] for r in d["rows"] if r["model"] == "midsize")
    assert f"On the hidden-384 model the bound is {mid:.2f}," in README
    assert max(abs(r["measured_wall_over_mac"] - r["best_wall_over_mac"]) for r in d["rows"] if r["model"] == "midsize") < 0.1


def test_search_md_multi_fidelity_protocol_is_its_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """The validated run against its multi-fidelity repeat: docs/search.md's text and table are rendered from the
    histories and validations, and the verdict it states follows from the table."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_search_cost", ROOT / "benchmarks" / "search_cost.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    doc = (ROOT / "docs" / "search.md").read_text()
    assert mod.mf_protocol() in doc
    ref, mf = _load("search_shapes_history.json"), _load("search_shapes_history_mf.json")
    saving = 1 - mf["block_evals"] * mf["config"]["batch_size"] / (ref["block_evals"] * ref["config"]["batch_size"])
    assert f"the per-sample saving ({100 * saving:.0f} %)" in doc
    assert mf["config"]["multi_fidelity"] and not ref["config"]["multi_fidelity"]
    assert {k: v for k, v in mf["config"].items() if k not in ("multi_fidelity", "batch_size", "screen_keep", "screen_pool",
            "screen_generations")} == {k: v for k, v in ref["config"].items() if k not in ("multi_fidelity", "batch_size")}
    diffs = [float(line.rsplit("|", 2)[-2]) for line in mod.mf_protocol().splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert min(diffs) < 0 < max(diffs)  # "better at some levels, worse at others": the default stays off


def test_readme_block_reuse_table_is_its_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # block_reuse.py imports its sibling benchmarks
    spec = importlib.util.spec_from_file_location("bench_block_reuse", ROOT / "benchmarks" / "block_reuse.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = _load("block_reuse.json")["rows"]
    assert mod.table(rows) in README
    by = {(r["schedule"], r["semantics"]): r for r in rows[1:]}
    assert f"FORA-4: {by['fora-4', 'ecad']['wall_over_macs']:.2f} → {by['fora-4', 'block']['wall_over_macs']:.2f}" in README
    u, f4 = rows[0]["wall_median_s"], by["fora-4", "block"]
    full, skip = u / 20, (f4["wall_median_s"] - 5 * u / 20) / 15  # what bounds wall / MACs (README)
    assert f"FORA-4 (block) takes {f4['wall_median_s']:.3f} s for 5 full steps (5 × {u:.3f} s / 20)" in README
    assert f"costs {1e3 * skip:.1f} ms, {100 * skip / full:.1f} % of a full step" in README
    assert f"carries {100 * (20 / f4['macs_speedup'] - 5) / 15:.1f} % of a step's MACs" in README


def test_readme_peers_table_is_peers_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "benchmarks" / "peers.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_peers", mod)  # its @dataclass looks its module up there
    spec.loader.exec_module(mod)
    pix = _load("peers.json")
    assert mod.table(pix) in README
    f5 = next(r for r in pix["rows"] if r["setting"] == "fora:5")
    assert f"FORA N=5 ({f5['psnr']:.1f} dB at {f5['macs_speedup']:.2f}×" in README
    assert f"On the PixArt ({pix['wall_s'] / 60:.0f} minutes on core 1" in README
    flux = _load("peers_tiny_flux.json")
    assert mod.table(flux) in README
    assert f"{flux['wall_s'] / 60:.0f} minutes on core 1" in README
    rows = {(r["library"], r["setting"]): r for r in flux["rows"]}
    both = rows["dit-cache", "learned-3.81x+cfg-cache:2:2"]
    assert f"`learned-3.81x+cfg-cache:2:2` keeps {both['psnr']:.1f} dB at {both['macs_speedup']:.2f}×" in README
    assert f"`learned-6.08x` {rows['dit-cache', 'learned-6.08x']['psnr']:.1f} dB at 6.08×" in README
    walls = (both["wall_speedup"], rows["dit-cache", "learned-3.81x"]["wall_speedup"])
    assert "(wall× {:.2f} against\n{:.2f} for `learned-3.81x` alone".format(*walls) in README


def test_search_md_true_cfg_tiny_flux_run_is_its_json() -> None:
    """The true-CFG search's summary and verdict table in docs/search.md quote its history and validation JSON."""
    h = _load("search_shapes_history_tiny_flux_cfg.json")
    doc = (ROOT / "docs" / "search.md").read_text()
    assert f"{h['evaluations']:,} schedules evaluated" in doc
    assert f"{h['block_evals']:,} with prefix sharing vs {h['block_evals_naive']:,} naive = {h['prefix_sharing_saving']:.2f}×" in doc
    assert f"{h['wall_s'] / 60:.1f} min on one core" in doc
    rows = {r["variant"]: r for r in _load("search_validation_shapes_tiny_flux_cfg.json")["rows"]}
    for name in ("search-53-1.42x", "search-49-1.53x", "search-40-1.81x", "search-35-1.98x", "search-32-2.20x",
                 "search-29-2.47x", "search-23-2.82x", "search-22-2.87x", "search-21-3.21x", "search-19-3.81x",
                 "search-17-3.96x", "search-03-6.56x"):
        x = name.split("-")[-1][:-1]
        assert f"{x}×: {rows[name]['psnr_db']:.2f}" in doc or f"{x}×: **{rows[name]['psnr_db']:.2f}**" in doc, name
    verdicts = (ROOT / "docs" / "search_validation_shapes_tiny_flux_cfg.md").read_text()
    table = [x for x in verdicts[verdicts.index("| baseline | psnr |"):].split("\n\n")[0].splitlines()[2:]
             if x.startswith("|")]
    dominated = sum("not dominated" not in line.split("|")[2] for line in table)
    assert f"it dominates {dominated} of the {len(table)} baseline points" in doc


def test_search_md_static_plus_cfg_cache_table_is_its_json() -> None:
    """The past-4x table in docs/search.md quotes search.validate --specs' JSON on tiny-flux."""
    d = _load("validation_specs_tiny_flux.json")
    rows = {r["variant"]: r for r in d["rows"]}
    doc = (ROOT / "docs" / "search.md").read_text()
    for name in ("fora-4", "fora-4+cfg-cache-2", "learned-3.16x", "learned-3.16x+cfg-cache-2", "learned-3.81x",
                 "learned-3.81x+cfg-cache-2", "learned-6.08x"):
        r = rows[name]
        assert f"{r['macs_speedup']:.2f}×: {r['psnr_db']:.2f} dB, {100 * r['adherence']:.1f} %" in doc, name
    gap = 100 * (rows["learned-3.81x+cfg-cache-2"]["adherence"] - rows["uncached"]["adherence"])
    assert f"uncached ({gap:+.1f} points)" in doc
    both = rows["learned-3.81x+cfg-cache-2"]
    assert (f"keeps\n{both['psnr_db']:.2f} dB at {both['macs_speedup']:.2f}× with adherence {gap:+.1f} points on "
            f"{len(d['prompts'])} held-out prompts") in README
    assert rows["fora-4"]["variant"] in d["verdicts"]["dominated"] and d["verdicts"]["dominated"]["fora-4"] == [
        "learned-3.81x+cfg-cache-2"]
    for name, shown in (("2-w1", "2:1"), ("3", "3:2"), ("3-w1", "3:1")):
        r = rows[f"learned-3.81x+cfg-cache-{name}"]
        assert f"`+cfg-cache:{shown}` {r['psnr_db']:.2f} dB / {100 * r['adherence']:.1f} %" in doc, name
    front = _load("search_shapes_history_tiny_flux_cfg.json")["front"]  # the search's front, calibration prompts
    at35 = min((f for f in front if f["psnr_db"] >= 35.0), key=lambda f: -f["macs_speedup"])
    past5 = max(f["psnr_db"] for f in front if f["macs_speedup"] >= 5.0)
    assert f"front has {at35['psnr_db']:.1f} dB at {at35['macs_speedup']:.2f}× on calibration prompts and at most " \
           f"{past5:.1f} dB at ≥ 5×" in doc
    f4, f4g = rows["fora-4"], rows["fora-4+cfg-cache-2"]
    assert (f"loses {f4['psnr_db'] - f4g['psnr_db']:.1f} dB for {f4g['macs_speedup'] / f4['macs_speedup']:.2f}× more"
            in doc)
    peers = {r["setting"]: r for r in _load("peers_tiny_flux.json")["rows"]}
    gated = peers["learned-6.08x+cfg-cache:2:2"]
    assert f"collapses ({gated['psnr']:.1f} dB at {gated['macs_speedup']:.2f}× in the peers run)" in doc
