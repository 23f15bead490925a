"""Tests for the embedded default model `tiny-pixart-shapes`, its procedural data and the shapes scorer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dit_cache import zoo
from dit_cache.zoo import shapes as S


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
