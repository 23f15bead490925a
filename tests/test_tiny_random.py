"""Tests for the tiny offline random-weight pipelines in dit_cache.zoo.tiny_random."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline

from dit_cache.zoo.tiny_random import (
    FAMILIES,
    build_midsize_pixart_transformer,
    build_tiny_pipeline,
    tiny_call_kwargs,
)

# Default output_type: "latent" everywhere except dit ("np": DiTPipeline always decodes).
EXPECTED_SHAPES = {
    "pixart": (1, 4, 8, 8),
    "dit": (1, 16, 16, 3),
    "flux": (1, 16, 16),  # packed latents: (batch, 4x4 tokens, 4 channels x 2x2)
    "sd3": (1, 16, 8, 8),
    "wan": (1, 16, 2, 4, 4),  # (batch, channels, latent frames, h, w)
}
EXPECTED_CALLS_PER_STEP = {"pixart": 1, "dit": 1, "flux": 2, "sd3": 1, "wan": 2}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test with the hub disabled and outgoing sockets refused."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Use one intra-op thread: these ops are tiny, and 2 threads thrash badly on a busy 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _output(pipe: DiffusionPipeline, family: str, steps: int, output_type: str | None = None) -> np.ndarray:
    """Run the pipeline once and return its output array."""
    kwargs = tiny_call_kwargs(family, num_inference_steps=steps, seed=0, output_type=output_type)
    return np.asarray(pipe(**kwargs, return_dict=False)[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_pipeline_runs_deterministically(family: str) -> None:
    pipe = build_tiny_pipeline(family, seed=0)
    first, second = _output(pipe, family, 4), _output(pipe, family, 4)
    assert first.shape == EXPECTED_SHAPES[family]
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("family", FAMILIES)
def test_decoded_output_is_finite(family: str) -> None:
    out = _output(build_tiny_pipeline(family), family, 2, output_type="np")
    assert out.shape == ((1, 5, 32, 32, 3) if family == "wan" else (1, 16, 16, 3))
    assert np.isfinite(out).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_build_is_deterministic(family: str) -> None:
    a = build_tiny_pipeline(family, seed=3).transformer.state_dict()
    b = build_tiny_pipeline(family, seed=3).transformer.state_dict()
    c = build_tiny_pipeline(family, seed=4).transformer.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("family", FAMILIES)
def test_cfg_transformer_calls_per_step(family: str) -> None:
    pipe = build_tiny_pipeline(family)
    calls: list[int] = []
    pipe.transformer.register_forward_pre_hook(lambda module, args: calls.append(1))
    _output(pipe, family, 3)
    assert len(calls) == 3 * EXPECTED_CALLS_PER_STEP[family]


def test_build_does_not_touch_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_pipeline("pixart")
    assert torch.equal(torch.rand(3), expected)


def test_num_layers_override() -> None:
    assert len(build_tiny_pipeline("pixart", num_layers=2).transformer.transformer_blocks) == 2
    flux = build_tiny_pipeline("flux", num_layers=3).transformer
    assert (len(flux.transformer_blocks), len(flux.single_transformer_blocks)) == (3, 2)
    assert len(build_tiny_pipeline("wan", num_layers=3).transformer.blocks) == 3
    sd3 = build_tiny_pipeline("sd3").transformer
    assert sd3.transformer_blocks[0].attn2 is not None


def test_unknown_family() -> None:
    with pytest.raises(ValueError, match="unknown family"):
        build_tiny_pipeline("sdxl")


def test_midsize_pixart_transformer_shape() -> None:
    model = build_midsize_pixart_transformer(seed=0)
    assert (model.config.num_layers, model.inner_dim) == (12, 384)
    latents = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    captions = torch.randn(1, 8, model.config.caption_channels, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(latents, encoder_hidden_states=captions, timestep=torch.tensor([500])).sample
    assert out.shape == (1, 8, 32, 32)
    assert torch.isfinite(out).all()
