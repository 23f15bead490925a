"""The second embedded model `tiny-flux-shapes` (a trained FluxPipeline, true CFG): offline loading, determinism,
`--model tiny-flux`, and caching on it (per-CFG-branch state: FLUX's true CFG makes two transformer calls a step)."""

from __future__ import annotations

import pytest
import torch

import dit_cache as dc
from dit_cache import zoo

PROMPTS = ["a small red circle in the top left on a gray background", "center: large blue square, white background"]


@pytest.fixture(scope="module")
def pipe():
    """The shipped pipeline, loaded offline (it ships in the repo: a missing folder is a failure)."""
    return zoo.load(zoo.FLUX_MODEL)


def _gen(pipe, steps: int = 4, **kw) -> torch.Tensor:
    return pipe(PROMPTS, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), **kw).images


def test_tiny_flux_loads_offline_and_generates_deterministically(pipe) -> None:
    from diffusers import FluxPipeline

    assert isinstance(pipe, FluxPipeline) and isinstance(pipe, zoo.ShapesFluxPipeline)
    cfg = pipe.transformer.config
    assert cfg.num_layers >= 4 and cfg.num_single_layers >= 8 and not cfg.guidance_embeds
    a, b = _gen(pipe, output_type="pt"), _gen(pipe, output_type="pt")
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b)
    assert float(a.std()) > 0.05  # not a constant image
    files = [p for p in (zoo.ZOO_DIR / zoo.FLUX_MODEL).rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 25 * 2 ** 20
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pkl", ".ckpt")]


def test_model_spec_tiny_flux(pipe) -> None:
    loaded = dc.load_pipeline("tiny-flux")
    assert loaded.family == "flux" and loaded.shapes and not loaded.random_weights
    assert loaded.call_defaults == pipe.CALL_DEFAULTS
    assert loaded.call_kwargs(guidance_scale=2.0)["true_cfg_scale"] == 2.0  # the model's own CFG argument
    assert "guidance_scale" not in loaded.call_kwargs(guidance_scale=2.0)


def test_caching_tiny_flux_counts_both_cfg_branches(pipe) -> None:
    """Compute-all is bit-exact; FORA-2 computes the counted cells on each of the two CFG calls per step."""
    space = dc.space_of(pipe.transformer)
    ref = _gen(pipe, steps=6, output_type="latent")
    with dc.accelerate(pipe, dc.fora(space, 6, 1)):
        assert torch.equal(_gen(pipe, steps=6, output_type="latent"), ref)
    sched = dc.fora(space, 6, 2)
    with dc.accelerate(pipe, sched) as handle:
        out = _gen(pipe, steps=6, output_type="latent")
        stats = handle.stats
    cells = int(sched.compute[:, space.applicable].sum())
    assert stats.evaluations == 2 * cells  # cond and uncond call
    assert stats.evaluations + stats.skipped == 2 * 6 * int(space.applicable.sum())
    mse = float(((out - ref) ** 2).mean())
    assert 0 < mse < 0.5 * float((ref ** 2).mean())
    assert torch.equal(_gen(pipe, steps=6, output_type="latent"), ref)  # remove() left no trace


def test_demo_lists_fora_for_tiny_flux(pipe) -> None:
    from eval.demo import demo_prompts, demo_variants

    variants = demo_variants(pipe, "tiny-flux", 20)
    assert list(variants)[:4] == ["uncached", "fora-2", "fora-3", "fora-4"]
    assert [v for v in variants if v.startswith("learned-")] == ["learned-2.20x", "learned-2.81x", "learned-3.16x",
                                                                  "learned-3.81x", "learned-6.08x"]
    assert len(demo_prompts("tiny-flux", 4)) == 4 and "background" in demo_prompts("tiny-flux", 4)[0]


def test_shipped_learned_schedules_run_with_the_macs_the_search_measured(pipe) -> None:
    """Each schedule in dit_cache/zoo/schedules/tiny-flux-shapes/ runs on the model with its recorded MACs/image."""
    from eval.demo import shipped_schedules

    files = shipped_schedules("tiny-flux", 20)
    assert len(files) == 5
    for path in files:
        meta = dc.Schedule.load(path).metadata
        with dc.accelerate(pipe, str(path)) as handle:
            pipe(PROMPTS[:1], num_inference_steps=20, generator=torch.Generator().manual_seed(0), output_type="latent")
            assert handle.stats.macs()["executed"] == meta["macs"], path.name
        assert meta["macs_full"] / meta["macs"] == pytest.approx(float(path.stem.split("-")[1][:-1]), abs=0.005)


def test_search_loop_runs_the_pipelines_true_cfg_generation(pipe) -> None:
    """The loop search, validate and the benchmarks build from the call defaults is `pipe(prompt)` bit for bit,
    with its two transformer calls per step (cond and uncond), and costs both of them."""
    from search.evaluator import Evaluator
    from search.loops import make_loop

    defaults = dc.resolve.call_defaults("tiny-flux", pipe)
    loop = make_loop(pipe, PROMPTS, [0, 1], 6, defaults)
    assert loop.cfg and len(loop.cost_calls()) == 2
    with torch.no_grad():
        want = pipe(PROMPTS, num_inference_steps=6, output_type="latent",
                    generator=[torch.Generator().manual_seed(s) for s in (0, 1)]).images
    assert torch.equal(pipe(**loop.call_kwargs()).images, want)
    ev = Evaluator(pipe, PROMPTS[:1], [0], 6, prefix_sharing=False, call_defaults=defaults)
    full = dc.compute_all(dc.space_of(pipe.transformer), 6)
    macs = ev.macs(full)
    ev.close()
    with dc.accelerate(pipe, full) as handle:
        pipe(PROMPTS[:1], num_inference_steps=6, generator=torch.Generator().manual_seed(0), output_type="latent")
        assert macs == handle.stats.macs()["executed"]  # both CFG calls
