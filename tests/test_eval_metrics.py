"""eval metrics against hand-computed values, latency/memory helpers, and the clear offline errors."""

from __future__ import annotations

import math
import time

import pytest
import torch

from eval import metrics as M
from eval.latency import PeakMemory, Timing, time_interleaved


def test_psnr_of_known_arrays():
    ref = torch.zeros(2, 3, 4, 4)
    img = torch.stack([torch.full((3, 4, 4), 0.1), torch.full((3, 4, 4), 0.01)])  # MSE 1e-2 and 1e-4
    assert M.psnr(img, ref) == pytest.approx((20.0 + 40.0) / 2, abs=1e-4)
    assert M.psnr(ref, ref) == math.inf
    with pytest.raises(ValueError, match="shape mismatch"):
        M.psnr(img, ref[:1])


def test_ssim_and_latent_mse():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 16, 16, generator=g)
    assert M.ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    noisy = (a + 0.2 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    assert 0.0 < M.ssim(noisy, a) < 0.9
    assert M.ssim(M.to_uint8(a), M.to_uint8(a)) == pytest.approx(1.0, abs=1e-6)
    assert M.latent_mse(torch.ones(2, 4), torch.zeros(2, 4)) == 1.0
    assert M.latent_mse(torch.tensor([[3.0, 0.0]]), torch.zeros(1, 2)) == 4.5


def _images(n: int, seed: int = 0) -> torch.Tensor:
    """uint8 images in [50, 150] so that a +25 shift never clips."""
    return torch.randint(50, 151, (n, 3, 16, 16), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_fid_identical_sets_is_zero_and_grows_with_a_shift():
    x = _images(64)
    assert M.fid(x, x, M.PixelFeatures()) == pytest.approx(0.0, abs=1e-3)
    f1 = M.fid(x + 10, x, M.PixelFeatures())
    f2 = M.fid(x + 25, x, M.PixelFeatures())
    # a mean shift d in each of the 48 features (same covariance) gives FID = 48 d^2
    assert f2 == pytest.approx(48 * (25 / 255) ** 2, rel=0.03)
    assert 0 < f1 < f2
    assert M.fid(_images(64, seed=1), x, "pixels") > 0  # by name too


def test_fid_with_a_pluggable_feature_module():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    feat = torch.nn.Module()
    feat.forward = lambda im: net(im.float() / 255)  # (N, 16)
    x = _images(32)
    assert M.fid(x, x, feat) == pytest.approx(0.0, abs=1e-3)
    assert M.fid((x.int() + 40).clamp(0, 255).to(torch.uint8), x, feat) > 1e-3
    with pytest.raises(ValueError, match="at least 2"):
        M.fid(x[:1], x, "pixels")


def test_inception_fid_offline_names_the_fix():
    pytest.importorskip("torchmetrics")
    try:
        import torch_fidelity  # noqa: F401

        pytest.skip("torch-fidelity is installed here")
    except ImportError:
        pass
    with pytest.raises(M.MetricUnavailable, match=r"pip install torch-fidelity.*--fid-features shapes"):
        M.fid(_images(4), _images(4), "inception")
    with pytest.raises(ValueError, match="unknown FID features"):
        M.fid_feature_extractor("vgg")


def test_shapes_fid_features_or_clear_error():
    from eval.shapes_scorer import WEIGHTS

    if not WEIGHTS.is_file():
        with pytest.raises(M.MetricUnavailable, match=r"training\.scorer train"):
            M.fid_feature_extractor("shapes")
        return
    feat = M.fid_feature_extractor("shapes")
    x = _images(16)
    assert M.fid(x, x, feat) == pytest.approx(0.0, abs=1e-2)


def test_clip_score_plumbing_with_random_weights():
    scorer = M.clip_scorer("ViT-S-32", pretrained=None)
    imgs = _images(3)
    s = scorer.scores(imgs, ["a red circle", "a blue square", "a cat"])
    assert s.shape == (3,) and torch.isfinite(s).all() and (s >= 0).all() and (s <= 100).all()
    assert scorer(imgs, ["a", "b", "c"]) == pytest.approx(float(scorer.scores(imgs, ["a", "b", "c"]).mean()))
    with pytest.raises(ValueError, match="3 images but 2 prompts"):
        scorer.scores(imgs, ["a", "b"])


def test_clip_offline_and_bad_names(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if M._clip_weights_cached("ViT-B-32", "openai"):
        pytest.skip("the CLIP weights are cached here")
    with pytest.raises(M.MetricUnavailable, match="--clip-pretrained"):
        M.clip_scorer("ViT-B-32", "openai")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        M.clip_scorer("ViT-Nope", None)
    with pytest.raises(ValueError, match="unknown pretrained tag"):
        M.clip_scorer("ViT-B-32", "no-such-tag")


def test_lpips_without_weights_names_the_fix():
    if M._torchvision_weights_cached("alex") is not None:
        x = _images(2).float() / 255
        assert M.lpips(x, x) == pytest.approx(0.0, abs=1e-5)
        return
    with pytest.raises(M.MetricUnavailable, match="torchvision"):
        M.lpips(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_time_interleaved_rotates_and_counts():
    order: list[str] = []
    fns = {n: (lambda n=n: order.append(n)) for n in "abc"}
    setups, teardowns = [], []
    out = time_interleaved(fns, warmup=1, repeats=2, setup=lambda n: setups.append(n) or n,
                           teardown=lambda n, st: teardowns.append((n, st)))
    assert order == list("abc" "bca" "cab")
    assert setups == order and teardowns == [(n, n) for n in order]
    assert all(len(t.seconds) == 2 for t in out.values())
    s = out["a"].summary()
    assert s["min_s"] <= s["median_s"] <= s["max_s"] and s["memory_kind"] == "rss" and s["peak_memory_bytes"] > 0
    with pytest.raises(ValueError, match="repeats >= 1"):
        time_interleaved(fns, repeats=0)


def test_timing_summary_numbers():
    s = Timing("x", [3.0, 1.0, 2.0, 10.0]).summary()
    assert s["median_s"] == 2.5 and s["min_s"] == 1.0 and s["max_s"] == 10.0 and s["mean_s"] == 4.0
    assert s["iqr_s"] == pytest.approx(4.75 - 1.75)


def test_peak_rss_sees_a_temporary_allocation():
    import psutil

    proc = psutil.Process()
    before = proc.memory_info().rss
    with PeakMemory("cpu") as pm:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        during = proc.memory_info().rss
        time.sleep(0.1)  # the sampler (every 5 ms) sees it
        del x
    assert pm.kind == "rss" and pm.peak >= max(during, before)
