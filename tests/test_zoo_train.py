"""Training-script helpers that can be checked without a training run."""

from __future__ import annotations

import torch

from training.train import draw_indices


def test_draw_indices_default_is_uniform_and_p_two_sets_the_mix():
    want = torch.randint(0, 100, (8,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(draw_indices(torch.Generator().manual_seed(3), 100, 8), want)  # default: unchanged stream
    single, two = torch.arange(0, 60), torch.arange(60, 100)
    g = torch.Generator().manual_seed(0)
    idx = draw_indices(g, 100, 20_000, (single, two), 0.1)
    assert 0.09 < float((idx >= 60).float().mean()) < 0.11
    assert set(idx.tolist()) == set(range(100))  # every scene of both groups can be drawn
    assert (draw_indices(g, 100, 1000, (single, two), 0.0) < 60).all()
    assert (draw_indices(g, 100, 1000, (single, two), 1.0) >= 60).all()


def test_draw_timesteps_bias_favours_high_noise():
    from training.train import NUM_TRAIN_TIMESTEPS, draw_timesteps

    want = torch.randint(0, NUM_TRAIN_TIMESTEPS, (8,), generator=torch.Generator().manual_seed(1))
    assert torch.equal(draw_timesteps(torch.Generator().manual_seed(1), 8), want)  # default: unchanged stream
    t = draw_timesteps(torch.Generator().manual_seed(0), 50_000, 1.0).float() / NUM_TRAIN_TIMESTEPS
    assert 0 <= float(t.min()) and float(t.max()) < 1
    assert abs(float(t.mean()) - 2 / 3) < 0.01  # density 2x on [0, 1]: mean 2/3
    assert abs(float((t > 0.5).float().mean()) - 0.75) < 0.01


def test_shape_errors_by_size_and_confusions() -> None:
    from training import shapes as S
    from training.train import shape_errors

    prompts = ["white background with a small red square at the center",
               "cyan triangle, large, bottom center, on white",
               "white background with a small green cross at the center"]
    preds = [S.parse_caption(p) for p in prompts]
    wrong = S.parse_caption(prompts[2].replace("cross", "circle"))
    res = shape_errors([preds[0], preds[1], wrong], prompts)
    assert res["shape_accuracy_by_size"] == {"large": 1.0, "small": 0.5}
    assert res["n_by_size"] == {"large": 1, "small": 2}
    assert res["confusions"] == {"cross->circle": 1}


def test_runtime_package_never_imports_training_search_or_eval() -> None:
    import ast
    from pathlib import Path

    import dit_cache

    bad = []
    for f in Path(dit_cache.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            bad += [f"{f.name}: {n}" for n in names if n.split(".")[0] in ("training", "search", "eval")]
    assert not bad, bad
