"""Tests for the embedded default model `tiny-pixart-shapes`, its procedural data and the shapes scorer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dit_cache import zoo
from training import shapes as S


@pytest.fixture(scope="module")
def pipe():
    """The shipped pipeline, loaded offline."""
    if not (zoo.ZOO_DIR / zoo.DEFAULT_MODEL / "model_index.json").exists():
        pytest.skip("shipped weights missing")
    return zoo.load()


def test_parse_caption_roundtrip() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        scene = S.sample_scene(rng, p_two=0.5)
        assert len({o.position for o in scene.objects}) == len(scene.objects)
        for t in range(S.NUM_TEMPLATES):
            assert S.parse_caption(S.caption(scene, t)) == scene


def test_splits_disjoint() -> None:
    caps = {sp: {c for _, c in S.split_prompts(sp, 200, seed=1, n_objects=None)} for sp in S.SPLITS}
    assert all(len(c) == 200 for c in caps.values())
    assert not caps["train"] & caps["val"] and not caps["train"] & caps["heldout"] and not caps["val"] & caps["heldout"]
    for sp, cs in caps.items():
        assert all(S.caption_split(c) == sp for c in cs)


def test_render_deterministic() -> None:
    scene = S.sample_scene(np.random.default_rng(3))
    a, b = S.render(scene, 32), S.render(scene, 32)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8 and np.array_equal(a, b)


def test_scorer_reads_ground_truth() -> None:
    from eval.shapes_scorer import WEIGHTS, adherence

    if not WEIGHTS.exists():
        pytest.skip("scorer weights missing")
    rng = np.random.default_rng(7)
    scenes = [S.sample_split_scene(rng, "heldout", 0.5) for _ in range(64)]
    imgs = torch.from_numpy(S.render_batch(scenes, 32, jitter=rng)).permute(0, 3, 1, 2)
    res = adherence(imgs, [S.caption(s, i % S.NUM_TEMPLATES) for i, s in enumerate(scenes)])
    assert min(res[a] for a in ("color", "shape", "size", "position")) >= 0.97
    assert res["all_correct"] >= 0.9


def test_pipeline_deterministic(pipe) -> None:
    from diffusers import PixArtAlphaPipeline

    assert isinstance(pipe, PixArtAlphaPipeline) and zoo.DEFAULT_MODEL == "tiny-pixart-shapes"
    prompts = ["a small red circle in the top left on a gray background", "center: large blue square, white background"]
    kw = dict(zoo.CALL_KWARGS, num_inference_steps=4, output_type="pt")
    a = pipe(prompts, generator=torch.Generator().manual_seed(0), **kw).images
    b = pipe(prompts, generator=torch.Generator().manual_seed(0), **kw).images
    assert a.shape == (2, 3, 32, 32)
    assert torch.equal(a, b)


def test_caching_the_shipped_model_reduces_evaluations(pipe) -> None:
    """FORA-2 and every shipped learned schedule: exact component counts, fewer evaluations, output close to uncached."""
    import dit_cache as dc

    prompts = ["a small red circle in the top left on a gray background", "center: large blue square, white background"]
    kw = dict(zoo.CALL_KWARGS, output_type="latent")
    ref = pipe(prompts, generator=torch.Generator().manual_seed(0), **kw).images
    space = dc.space_of(pipe.transformer)
    files = sorted((zoo.ZOO_DIR / "schedules" / zoo.DEFAULT_MODEL).glob("*.json"))
    assert files, "no learned schedule shipped for the embedded model"
    for sched in [dc.fora(space, 20, 2), *(dc.Schedule.load(f) for f in files)]:
        with dc.accelerate(pipe, sched) as handle:
            out = pipe(prompts, generator=torch.Generator().manual_seed(0), **kw).images
            stats = handle.stats
        n_cells = int(space.applicable.sum())
        computed_cells = int(sched.compute[:, space.applicable].sum())
        assert stats.evaluations == computed_cells  # one transformer call per step (CFG batched)
        assert stats.evaluations + stats.skipped == 20 * n_cells
        assert stats.evaluations < 20 * n_cells
        speedup = stats.macs()["speedup"]
        if "macs_speedup" in sched.metadata:  # the search's cost model and the runtime's counters agree
            assert speedup == pytest.approx(sched.metadata["macs_speedup"], rel=1e-9)
        mse = float(((out - ref) ** 2).mean())
        assert 0 < mse < float((ref ** 2).mean()) * 0.5, (sched.name, mse)


def test_demo_generates_the_embedded_model_at_its_native_size(pipe) -> None:
    """Regression: the demo once rendered the 32x32 model at 16x16 (a random-tiny shortcut)."""
    from eval.demo import _call

    imgs = _call(pipe, ["a small red circle in the top left on a gray background"], 2, 0, latent=False)
    assert imgs.shape == (1, 3, 32, 32)
