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
    assert len(demo_prompts("tiny-flux", 4)) == 4 and "background" in demo_prompts("tiny-flux", 4)[0]
