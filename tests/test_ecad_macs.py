"""ECAD import/export on the published files, and the MAC counter against ECAD's figures and torch's counter."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from dit_cache import InputSpec, ScheduleWarning, load_ecad, schedule_macs, step_cost_from_config, to_ecad
from dit_cache.ecad import from_ecad
from dit_cache.schedule import ScheduleError

from .conftest import DATA

ECAD_FILES = [
    "pixart_alpha_256/ours_fast.json",
    "pixart_alpha_256/ours_faster.json",
    "pixart_alpha_256/ours_fastest.json",
    "pixart_alpha_256_heuristics/default.json",
    "pixart_alpha_256_heuristics/recompute_all_every_002.json",
    "pixart_alpha_256_heuristics/recompute_all_every_003.json",
]


@pytest.fixture(scope="module")
def pixart_alpha_ecad_cost():
    """ECAD-convention cost of PixArt-α 256px at CFG batch 2 with 120 text tokens."""
    cfg = json.loads((DATA / "pixart_alpha_256_transformer_config.json").read_text())
    return step_cost_from_config("pixart", cfg, InputSpec(256, 256, batch=2, text_len=120), "ecad")


def test_compute_all_is_5_714_tmacs(pixart_alpha_ecad_cost):
    assert pixart_alpha_ecad_cost.full == 285_689_806_848  # ECAD's per-step figure
    assert round(20 * pixart_alpha_ecad_cost.full / 1e12, 3) == 5.714


@pytest.mark.parametrize("name", ECAD_FILES)
def test_ecad_files_reproduce_published_macs(shared, pixart_alpha_ecad_cost, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScheduleWarning)
        sched = load_ecad(shared / "ecad_schedules" / name)
    data = json.loads((shared / "ecad_schedules" / name).read_text())
    per_step = schedule_macs(sched.compute, pixart_alpha_ecad_cost)
    total, published = int(per_step.sum()), data["metrics"]["total_macs"]
    assert abs(total - published) / published < 1e-3
    for s, m in enumerate(per_step):
        assert m == data["metrics"]["by_inference_step"][f"{s:03d}"]["macs"]


def test_step0_quirk_warns_once_naming_cells(shared):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sched = load_ecad(shared / "ecad_schedules/pixart_alpha_256/ours_fast.json")
    msgs = [str(w.message) for w in caught if issubclass(w.category, ScheduleWarning)]
    assert len(msgs) == 1 and "block 17 attn1" in msgs[0]
    assert sched.compute[0].all() and sched.family == "pixart" and sched.steps == 20


def test_ecad_round_trip(shared):
    path = shared / "ecad_schedules/pixart_alpha_256/ours_fastest.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScheduleWarning)
        sched = load_ecad(path)
        again = from_ecad(to_ecad(sched))
    assert np.array_equal(again.compute, sched.compute) and again.space == sched.space
    original = json.loads(path.read_text())["cache_schedule"]
    exported = to_ecad(sched)["cache_schedule"]
    assert exported["attributes"] == original["attributes"] and exported["name"] == original["name"]
    diff = [(s, b, c) for s in original["schedule"] for b in original["schedule"][s]
            for c, v in original["schedule"][s][b].items() if exported["schedule"][s][b][c] != v]
    assert diff == [("000", "15", "ff"), ("000", "17", "attn1")]  # only the repaired step-0 cells


def test_flux_ecad_keys(flux_space):
    from dit_cache import fora

    doc = to_ecad(fora(flux_space, 4, 2))
    blocks = doc["cache_schedule"]["schedule"]["001"]
    assert list(blocks) == ["0", "1", "single_0", "single_1"]
    assert blocks["0"] == {"full_attn": False, "full_ff": False, "full_ff_context": False}
    assert blocks["single_1"] == {"single_attn": False, "single_proj_mlp": False, "single_proj_out": False}
    assert from_ecad(doc).space == flux_space


def test_ecad_errors():
    with pytest.raises(ScheduleError, match="not an ECAD schedule"):
        from_ecad({"schedule": {}})
    doc = {"cache_schedule": {"num_inference_steps": 2, "schedule": {"000": {"0": {"attn1": True}}, "001": {"0": {"attn1": True}}}}}
    doc["cache_schedule"]["schedule"]["001"]["0"]["attnX"] = True
    with pytest.raises(ScheduleError, match="cannot tell the model family"):
        from_ecad(doc)


def _tiny_configs():
    """Tiny configs of every family (real CPU weights are cheap at this size)."""
    return {
        "pixart": (dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
                        cross_attention_dim=16, sample_size=8, norm_type="ada_norm_single", caption_channels=12,
                        use_additional_conditions=False), InputSpec(64, 64, batch=2, text_len=7)),
        "dit": (dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
                     sample_size=8, num_embeds_ada_norm=10), InputSpec(64, 64, batch=2)),
        "flux": (dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=16,
                      num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=12, guidance_embeds=True,
                      axes_dims_rope=(4, 6, 6)), InputSpec(64, 64, batch=1, text_len=5)),
        "sd3": (dict(sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
                     joint_attention_dim=24, caption_projection_dim=16, pooled_projection_dim=12, out_channels=4,
                     dual_attention_layers=(0,)), InputSpec(64, 64, batch=2, text_len=6)),
        "wan": (dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                     text_dim=24, freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=32),
                InputSpec(64, 64, batch=1, text_len=5, num_frames=5)),
    }


@pytest.mark.parametrize("family", ["pixart", "dit", "flux", "sd3", "wan"])
@pytest.mark.parametrize("convention", ["full", "ecad"])
def test_meta_count_matches_a_real_forward(family, convention):
    """The config-only count equals torch's FLOP counter on a real CPU model of that config."""
    from dit_cache import get_adapter
    from dit_cache.macs import _macs_by_module

    cfg, spec = _tiny_configs()[family]
    cost = step_cost_from_config(family, cfg, spec, convention)
    adapter = get_adapter(family)
    torch.manual_seed(0)
    model = adapter.meta_model(cfg).to_empty(device="cpu")
    kwargs = {k: _materialize(v) for k, v in adapter.example_inputs(model.config, spec).items()}
    # torch's counter does not see CPU's fused SDPA kernel: use the math backend for the reference count
    with sdpa_kernel(SDPBackend.MATH):
        real = _macs_by_module(model, (), kwargs, convention)
    assert cost.full == real[""] > 0
    assert (cost.component > 0).sum() == adapter.applicable(model).sum()
    assert cost.outside > 0 and cost.outside + cost.block_other.sum() + cost.component.sum() == real[""]
    if convention == "full":
        assert cost.full > step_cost_from_config(family, cfg, spec, "ecad").full  # attention matmuls counted


def _materialize(x):
    if isinstance(x, dict):
        return {k: _materialize(v) for k, v in x.items()}
    if isinstance(x, torch.Tensor):
        return torch.zeros(x.shape, dtype=x.dtype) if not x.dtype.is_floating_point else torch.randn(x.shape)
    return x


def test_pixart_component_formulas():
    """Hand formulas for PixArt-α 256 (linear layers, per sample): attn1 4·D²·N, attn2 D²·(2N+2T), ff 8·D²·N."""
    cfg = json.loads((DATA / "pixart_alpha_256_transformer_config.json").read_text())
    c = step_cost_from_config("pixart", cfg, InputSpec(256, 256, batch=1, text_len=120), "ecad")
    d, n, t = 1152, 256, 120
    assert c.component[0].tolist() == [4 * d * d * n, d * d * (2 * n + 2 * t), 8 * d * d * n]
    full = step_cost_from_config("pixart", cfg, InputSpec(256, 256, batch=1, text_len=120), "full")
    assert (full.component[0] - c.component[0]).tolist() == [2 * n * n * d, 2 * n * t * d, 0]  # QKᵀ and AV
    assert FlopCounterMode  # the reference counter used above
