"""Quality objectives of the search (all minimised); cost is exact MACs from `dit_cache.macs`.

* ``fidelity`` (default): mean per-image latent MSE of the final latents to the uncached model's for the
  same prompt and seed; needs no external weights (references are generated once and cached).
* ``psnr``: mean per-image *latent PSNR deficit* 100 dB − min(100, −10·log10 MSE_i) (0 for compute-all).
  Same distance, averaged in the log domain: a mean MSE can be carried by the few prompts whose trajectory
  bifurcates under caching (on the previous release of the embedded model, one prompt per set flipped the
  ranking of FORA N=2 vs ERTACache between prompt sets); the mean of logs ranks the typical image.
* ``image-psnr``: the same deficit on the *decoded images* (per-image PSNR in [0, 1], capped at 100 dB) — the
  quantity `search.validate`, `dit-cache eval` and the demo judge fidelity by. Latent and image PSNR can rank
  schedules differently (the VAE decoder weights latent errors unevenly); costs one VAE decode per candidate.
* ``adherence``: 1 − mean attribute accuracy (colour, shape, size, position) of the embedded model's shapes
  scorer on the decoded images (smoother than the all-correct rate, which is near 0 for a weak model).
* ``clip``: 1 − mean cosine similarity of open_clip image and text embeddings (local weights only).
* ``imagereward``: −mean ImageReward (only when the `image-reward` package and its weights are installed).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from eval.fidelity import psnr_per_image, to_uint8

Decode = Callable[[torch.Tensor], torch.Tensor]  # final latents -> images (N, 3, H, W) in [0, 1]

OBJECTIVES = ("fidelity", "psnr", "image-psnr", "adherence", "clip", "imagereward")
PSNR_CAP_DB = 100.0  # latent or image PSNR (peak 1) above this counts as exact: MSE floor 1e-10
ATTRIBUTES = ("color", "shape", "size", "position")  # adherence = mean accuracy over these


class ObjectiveUnavailable(RuntimeError):
    """An objective's package or weights are not available here."""


def latent_mse(latents: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image MSE (N,) between final latents (N, ...) of any family's layout."""
    return ((latents.float() - reference.float()) ** 2).flatten(1).mean(dim=1)


def latent_psnr(latents: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image latent PSNR (N,) in dB with peak 1, capped at PSNR_CAP_DB (identical latents)."""
    mse = latent_mse(latents, reference).clamp_min(10 ** (-PSNR_CAP_DB / 10))
    return -10 * torch.log10(mse)


def make_objective(name: str, pipe: Any, prompts: list[str], *, decode: Decode | None = None,
                   clip_weights: str | None = None,
                   clip_arch: str = "ViT-B-32") -> Callable[[torch.Tensor, torch.Tensor], dict[str, float]]:
    """fn(latents, reference_latents) -> {"quality": value to minimise, ...other metrics}; raises
    ObjectiveUnavailable with the fix when the objective cannot run here. `decode` turns final latents into
    images (the search passes its family loop's; default: a PixArt-style VAE decode of `pipe`)."""
    if decode is None:
        from eval.fidelity import decode_latents

        def decode(lat: torch.Tensor) -> torch.Tensor:
            return decode_latents(pipe, lat)
    if name == "fidelity":
        def fidelity(lat: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
            mse = float(latent_mse(lat, ref).mean())
            return {"quality": mse, "latent_mse": mse}
        return fidelity
    if name == "psnr":
        def psnr(lat: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
            db = float(latent_psnr(lat, ref).mean())
            return {"quality": PSNR_CAP_DB - db, "latent_psnr_db": db, "latent_mse": float(latent_mse(lat, ref).mean())}
        return psnr
    if name == "image-psnr":
        return _image_psnr(decode)
    if name == "adherence":
        return _adherence(decode, prompts)
    if name == "clip":
        return _clip(decode, prompts, clip_weights, clip_arch)
    if name == "imagereward":
        return _imagereward(decode, prompts)
    raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")


def _image_psnr(decode: Decode):
    """Image-PSNR deficit; the reference batch is decoded once, not per candidate (a sliced or copied
    reference with the same values reuses it too, as the multi-fidelity prompt subset does)."""
    decoded: dict[str, Any] = {"ref": None, "img": None}

    def image_psnr(lat: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
        cached = decoded["ref"]
        if cached is None or cached.shape != ref.shape or not torch.equal(cached, ref):
            decoded["ref"], decoded["img"] = ref.clone(), decode(ref)
        db = psnr_per_image(decode(lat), decoded["img"]).clamp(max=PSNR_CAP_DB).mean()
        return {"quality": PSNR_CAP_DB - float(db), "psnr_db": float(db),
                "latent_psnr_db": float(latent_psnr(lat, ref).mean()), "latent_mse": float(latent_mse(lat, ref).mean())}

    return image_psnr


def _adherence(decode: Decode, prompts: list[str]):
    try:
        from eval.shapes_scorer import adherence, load_classifier
        clf = load_classifier()
    except Exception as e:  # missing module or weights file
        raise ObjectiveUnavailable(
            f"the adherence objective needs the embedded model's shapes scorer (eval/shapes_scorer.py and its "
            f"weights): {type(e).__name__}: {e}. Use --objective fidelity, or --model tiny once the zoo model exists"
        ) from None
    from training.shapes import parse_caption

    try:
        for p in prompts:
            parse_caption(p)
    except Exception as e:
        raise ObjectiveUnavailable(
            f"the adherence objective scores shapes captions only (embedded model), but prompt {p!r} is not one "
            f"({e}); use calib_prompts/shapes_calib.txt or --objective fidelity"
        ) from None

    def score(lat: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
        u8 = to_uint8(decode(lat))  # (N, 3, H, W)
        res = adherence(u8, prompts, clf)
        acc = sum(res[k] for k in ATTRIBUTES) / len(ATTRIBUTES)
        return {"quality": 1.0 - acc, "adherence": acc, "all_correct": res["all_correct"],
                "latent_mse": float(latent_mse(lat, ref).mean())}

    return score


def _clip(decode: Decode, prompts: list[str], weights: str | None, arch: str):
    try:
        import open_clip
    except ImportError:
        raise ObjectiveUnavailable("the clip objective needs open_clip: pip install 'dit-cache[eval]'") from None
    if not weights or not Path(weights).is_file():
        raise ObjectiveUnavailable(
            f"the clip objective needs open_clip {arch} weights on disk (nothing is downloaded): pass "
            f"--clip-weights /path/to/open_clip_model.safetensors (got {weights!r}), or use --objective fidelity"
        )
    model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=weights)
    tok = open_clip.get_tokenizer(arch)
    model.eval()
    with torch.inference_mode():
        text = torch.nn.functional.normalize(model.encode_text(tok(prompts)), dim=-1)  # (N, D)
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    mean = torch.tensor(model.visual.image_mean or (0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.image_std or (0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)

    def score(lat: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
        img = decode(lat)
        img = torch.nn.functional.interpolate(img, size=(size, size), mode="bicubic", align_corners=False)
        with torch.inference_mode():
            im = torch.nn.functional.normalize(model.encode_image((img - mean) / std), dim=-1)
        cos = float((im * text).sum(-1).mean())
        return {"quality": 1.0 - cos, "clip_score": 100 * cos, "latent_mse": float(latent_mse(lat, ref).mean())}

    return score


def _imagereward(decode: Decode, prompts: list[str]):
    try:
        import ImageReward as RM
    except ImportError:
        raise ObjectiveUnavailable(
            "the imagereward objective needs the `image-reward` package and its weights (pip install image-reward; "
            "the weights must already be in its cache, nothing is downloaded here); use --objective fidelity"
        ) from None
    try:
        model = RM.load("ImageReward-v1.0")
    except Exception as e:  # missing weights offline
        raise ObjectiveUnavailable(f"ImageReward weights are not available offline ({type(e).__name__}: {e})") from None
    from PIL import Image

    def score(lat: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
        imgs = to_uint8(decode(lat)).permute(0, 2, 3, 1).numpy()
        vals = [float(model.score(p, Image.fromarray(im))) for p, im in zip(prompts, imgs)]
        r = sum(vals) / len(vals)
        return {"quality": -r, "imagereward": r, "latent_mse": float(latent_mse(lat, ref).mean())}

    return score
