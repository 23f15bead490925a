"""tiny-flux-shapes training pieces: packing, the rectified-flow batch, the true-CFG pipeline defaults, checkpoints."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dit_cache import zoo
from training import flux as FX
from training import train as T


def _data(n: int = 16) -> SimpleNamespace:
    """A stand-in latent pool: the batch functions read z_pool, scenes and groups only."""
    import numpy as np

    from training import shapes as S

    rng = np.random.default_rng(0)
    scenes = [S.sample_split_scene(rng, "train") for _ in range(n)]
    return SimpleNamespace(z_pool=torch.randn(n, 4, 16, 16, generator=torch.Generator().manual_seed(1)),
                           scenes=scenes, groups=None, ab=T.build_scheduler().alphas_cumprod)


def test_fg_map_packs_a_mask_like_the_latents() -> None:
    """A mask that is 1 where a latent is nonzero maps to 1 exactly where the packed latent is nonzero."""
    z = torch.zeros(2, 4, 16, 16)
    z[:, :, 3:7, 9:12] = 1.0
    packed, mask = FX.pack(z), FX.fg_map((z[:, :1] != 0).float())
    assert packed.shape == mask.shape == (2, 64, 16)
    assert torch.equal(packed != 0, mask != 0) and 0 < int(mask.sum()) < mask.numel()


def test_flux_batch_is_seeded_by_step_and_is_rectified_flow() -> None:
    data, tok = _data(), FX.tokenizer()
    a = FX.flux_batch(data, tok, 5, 0, 8, None, 0.0, 0.0)
    b = FX.flux_batch(data, tok, 5, 0, 8, None, 0.0, 0.0)
    c = FX.flux_batch(data, tok, 6, 0, 8, None, 0.0, 0.0)
    idx, ti, s, xt, v, w = a
    assert all(torch.equal(x, y) for x, y in zip((idx, s, xt, v), b[:1] + b[2:5]))
    assert not torch.equal(xt, c[3])
    assert ti.input_ids.shape == (8, T.TEXT_LEN) and xt.shape == v.shape == (8, 64, 16) and w.shape == (8, 1, 1)
    x0 = FX.pack(data.z_pool[idx])
    sv = s.view(-1, 1, 1)
    assert torch.allclose(xt + (1 - sv) * v, x0 + v, atol=1e-5)  # x_s = x0 + s v, v = eps - x0
    assert torch.allclose(xt - sv * v, x0, atol=1e-5)
    assert bool(((s > 0) & (s < 1)).all())
    # the same pool indices and captions as the PixArt recipe draws at that step
    assert torch.equal(idx, T._dit_batch(data, tok, 5, 0, 8, None, 0.0, 0.0)[0])


@pytest.fixture(scope="module")
def tiny_flux() -> zoo.ShapesFluxPipeline:
    """An untrained 1+1-block pipeline of the tiny-flux-shapes recipe (fresh weights, shipped VAE and T5)."""
    tok = FX.tokenizer()
    t5 = FX.pixart_t5()
    dit = FX.build_transformer(0, double=1, single=1)
    torch.nn.init.normal_(dit.proj_out.weight, std=0.02)
    return FX.make_pipeline(tok, FX.build_clip(len(tok), 0), t5, FX.reused_vae(), dit)


def test_flux_pipeline_defaults_run_true_cfg_per_prompt(tiny_flux) -> None:
    """`pipe(prompts)` runs true CFG against one empty prompt per prompt: 2 transformer calls per step."""
    calls = []
    h = tiny_flux.transformer.register_forward_pre_hook(lambda m, a, kw: calls.append(kw["hidden_states"].shape[0]),
                                                        with_kwargs=True)
    try:
        out = tiny_flux(["a red circle", "a blue square"], num_inference_steps=3, output_type="pt",
                        generator=torch.Generator().manual_seed(0)).images
    finally:
        h.remove()
    assert out.shape == (2, 3, 32, 32) and calls == [2] * 6
    again = tiny_flux(["a red circle", "a blue square"], num_inference_steps=3, output_type="pt",
                      generator=torch.Generator().manual_seed(0)).images
    assert torch.equal(out, again)
    no_cfg = tiny_flux(["a red circle", "a blue square"], num_inference_steps=3, output_type="pt", true_cfg_scale=1.0,
                       generator=torch.Generator().manual_seed(0)).images
    assert not torch.equal(out, no_cfg)


def test_flux_export_round_trip(tmp_path, tiny_flux) -> None:
    """A checkpoint exports to a FluxPipeline folder that zoo.load reads back with the shapes defaults."""
    d = tmp_path / "dit_ckpt"
    d.mkdir()
    tok = tiny_flux.tokenizer
    for name, mod in (("dit_ema", tiny_flux.transformer), ("clip_ema", tiny_flux.text_encoder),
                      ("te_ema", tiny_flux.text_encoder_2)):
        T._save_st(d / f"{name}.safetensors", mod.state_dict())
    T._save_json(d / "state.json", {"step": 1, "log": [], "adherence": [], "wall_s": 0.0})
    folder = FX.export(tmp_path, tmp_path / "pipe", 0, "test")
    pipe = zoo.load(str(folder))
    assert isinstance(pipe, zoo.ShapesFluxPipeline) and len(tok) == len(pipe.tokenizer)
    assert '"_class_name": "FluxPipeline"' in (folder / "model_index.json").read_text()
    assert pipe.vae.config.shift_factor == 0.0
    a = tiny_flux("a red circle", num_inference_steps=2, output_type="pt", generator=torch.Generator().manual_seed(0))
    b = pipe("a red circle", num_inference_steps=2, output_type="pt", generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a.images, b.images, atol=2e-2)  # fp16 storage


def test_flux_arch_has_no_vae_stage() -> None:
    with pytest.raises(SystemExit, match="reuses the shipped VAE"):
        T.main(["vae", "--arch", "flux", "--out", "/nonexistent"])


def test_calls_per_step_finds_true_cfg_and_baselines_add_cfg_caching(tiny_flux) -> None:
    import dit_cache as dc

    call = {"prompt": ["a red circle"], "generator": torch.Generator().manual_seed(0)}
    assert dc.resolve.calls_per_step(tiny_flux, call) == 2
    assert dc.resolve.calls_per_step(tiny_flux, {**call, "true_cfg_scale": 1.0}) == 1
    specs = [b.spec for b in dc.baselines(20, 12, separate_cfg=True)]
    assert [s for s in specs if s.startswith("cfg-cache")] == ["cfg-cache:2:2", "cfg-cache:3:2", "cfg-cache:5:2"]
    assert not any(b.backend == "cfg-cache" for b in dc.baselines(20, 12))


def test_decode_latents_unpacks_flux_tokens_like_the_pipeline(tiny_flux) -> None:
    from eval.fidelity import decode_latents

    kw = {"prompt": ["a red circle"], "num_inference_steps": 2}
    lat = tiny_flux(**kw, output_type="latent", generator=torch.Generator().manual_seed(0)).images  # (1, 64, 16)
    img = tiny_flux(**kw, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert lat.shape == (1, 64, 16)
    assert torch.allclose(decode_latents(tiny_flux, lat), img, atol=1e-6)
    with pytest.raises(ValueError, match="not a square"):
        decode_latents(tiny_flux, lat[:, :60])
