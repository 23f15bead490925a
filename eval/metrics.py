"""Image-quality metrics: FID (torchmetrics), CLIP score (open_clip), fidelity to the uncached output (PSNR,
SSIM, LPIPS, latent MSE). Anything that needs weights it cannot find raises `MetricUnavailable` naming the fix."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .fidelity import latent_mse, psnr

__all__ = [
    "FID_FEATURES",
    "MetricUnavailable",
    "PixelFeatures",
    "clip_scorer",
    "fid",
    "fid_feature_extractor",
    "latent_mse",
    "lpips",
    "psnr",
    "ssim",
    "to_uint8",
]

FID_FEATURES = ("inception", "shapes", "pixels")


class MetricUnavailable(RuntimeError):
    """A metric cannot run here (missing package or weights); the message says what to install or pass."""


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] (N, 3, H, W) -> uint8 (N, 3, H, W); uint8 passes through."""
    if images.dtype == torch.uint8:
        return images
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8)


def _float01(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


# ----------------------------------------------------------------------------- fidelity
def ssim(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean SSIM (torchmetrics, Gaussian 11x11 window, shrunk for tiny images) of images in [0, 1] or uint8."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    if images.shape != reference.shape:
        raise ValueError(f"shape mismatch: {tuple(images.shape)} vs {tuple(reference.shape)}")
    side = min(images.shape[-2:])
    kernel = min(11, side - 1 if side % 2 == 0 else side)  # odd and no larger than the image
    return float(structural_similarity_index_measure(_float01(images), _float01(reference), data_range=1.0,
                                                     kernel_size=kernel, sigma=1.5 * kernel / 11))


def _torchvision_weights_cached(net: str) -> Path | None:
    """Path of the torchvision backbone checkpoint LPIPS needs, if it is already in the torch hub cache."""
    import torchvision

    weights = {"alex": torchvision.models.AlexNet_Weights, "vgg": torchvision.models.VGG16_Weights,
               "squeeze": torchvision.models.SqueezeNet1_1_Weights}[net].DEFAULT
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    return path if path.is_file() else None


def lpips(images: torch.Tensor, reference: torch.Tensor, net: str = "alex") -> float:
    """Mean LPIPS (torchmetrics) of images in [0, 1] or uint8; needs the torchvision backbone weights cached."""
    if _torchvision_weights_cached(net) is None:
        raise MetricUnavailable(
            f"LPIPS needs torchvision's pretrained {net} weights, which are not in {torch.hub.get_dir()}/checkpoints; "
            "run once with network access (torchvision downloads them) or copy the file there"
        )
    from torchmetrics.functional.image.lpips import learned_perceptual_image_patch_similarity

    a, b = _float01(images), _float01(reference)
    if min(a.shape[-2:]) < 32:  # the backbones need some spatial extent
        a, b = (F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False) for x in (a, b))
    return float(learned_perceptual_image_patch_similarity(a, b, net_type=net, normalize=True))


# ----------------------------------------------------------------------------- FID
class PixelFeatures(nn.Module):
    """Weight-free FID features: the image average-pooled to `side` x `side` (plumbing and smoke tests)."""

    def __init__(self, side: int = 4):
        super().__init__()
        self.side = side
        self.num_features = 3 * side * side

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float (N, 3, H, W) -> (N, 3 * side * side) in [0, 1]."""
        return F.adaptive_avg_pool2d(_float01(images), self.side).flatten(1)


def fid_feature_extractor(kind: str) -> nn.Module | int:
    """`feature` argument for torchmetrics' FID: 'inception' (2048, needs torch-fidelity), 'shapes', 'pixels'."""
    if kind == "inception":
        try:
            import torch_fidelity  # noqa: F401
        except ImportError:
            raise MetricUnavailable(
                "FID with Inception features needs torch-fidelity and its FeatureExtractorInceptionV3 weights: "
                "`pip install torch-fidelity` and run once online (or put weights-inception-2015-12-05-6726825d.pth "
                "in the torch hub cache); offline, pass --fid-features shapes (embedded model) or pixels"
            ) from None
        return 2048
    if kind == "shapes":
        from .shapes_scorer import WEIGHTS, ShapesFeatures

        if not WEIGHTS.is_file():
            raise MetricUnavailable(f"shapes-FID needs the trained shapes scorer at {WEIGHTS} "
                                    "(`python -m training.scorer train`); or pass --fid-features pixels")
        return ShapesFeatures()
    if kind == "pixels":
        return PixelFeatures()
    raise ValueError(f"unknown FID features {kind!r}; choose one of {list(FID_FEATURES)}")


def fid(fake: torch.Tensor, real: torch.Tensor, feature: nn.Module | int | str = "inception",
        device: str | torch.device = "cpu", batch: int = 256) -> float:
    """Fréchet distance between two image sets (uint8 or [0, 1] float, (N, 3, H, W), N >= 2 each)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(fake) < 2 or len(real) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(fake)} and {len(real)}")
    feat = fid_feature_extractor(feature) if isinstance(feature, str) else feature
    try:
        metric = FrechetInceptionDistance(feature=feat, normalize=False, sync_on_compute=False)  # scored on one process
    except (ModuleNotFoundError, OSError, RuntimeError) as e:  # weights missing or not downloadable
        raise MetricUnavailable(f"could not build the FID feature extractor ({type(e).__name__}: {e}); "
                                "offline, pass --fid-features shapes or pixels") from None
    metric = metric.to(device)
    for images, is_real in ((real, True), (fake, False)):  # uint8: the Inception path resizes to 299 itself
        for i in range(0, len(images), batch):
            metric.update(to_uint8(images[i: i + batch]).to(device), real=is_real)
    return max(0.0, float(metric.compute()))


# ----------------------------------------------------------------------------- CLIP score
class ClipScorer:
    """CLIP score 100 * max(cos(image, text), 0), averaged (Hessel et al. 2021; torchmetrics' convention)."""

    def __init__(self, model: nn.Module, preprocess, tokenizer, device: str = "cpu"):
        self.model, self.preprocess, self.tokenizer, self.device = model.eval().to(device), preprocess, tokenizer, device

    @torch.no_grad()
    def scores(self, images: torch.Tensor, prompts: list[str], batch: int = 32) -> torch.Tensor:
        """Per-image CLIP scores (N,) of uint8 or [0, 1] images (N, 3, H, W) against their prompts."""
        from PIL import Image

        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        u8 = to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, 3)
        out = []
        for i in range(0, len(u8), batch):
            pix = torch.stack([self.preprocess(Image.fromarray(a)) for a in u8[i: i + batch]]).to(self.device)
            tok = self.tokenizer(prompts[i: i + batch]).to(self.device)
            im = F.normalize(self.model.encode_image(pix).float(), dim=-1)
            tx = F.normalize(self.model.encode_text(tok).float(), dim=-1)
            out.append(100 * (im * tx).sum(-1).clamp(min=0))
        return torch.cat(out).cpu()

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> float:
        """Mean CLIP score."""
        return float(self.scores(images, prompts).mean())


def clip_scorer(model: str = "ViT-B-32", pretrained: str | None = "openai", device: str = "cpu") -> ClipScorer:
    """open_clip model + preprocessing + tokenizer; `pretrained=None` gives seeded random weights (plumbing only)."""
    try:
        import open_clip
    except ImportError:
        raise MetricUnavailable("CLIP score needs open_clip: `pip install open_clip_torch`") from None
    if model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model!r}; e.g. ViT-B-32, ViT-L-14 (see open_clip.list_models())")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    local = pretrained is None or Path(pretrained).is_file()
    if not local and not _clip_weights_cached(model, pretrained) and offline:
        raise MetricUnavailable(
            f"CLIP weights {model}/{pretrained} are not in the local cache and HF_HUB_OFFLINE is set; download "
            "them once online (`python -c \"import open_clip; open_clip.create_model_and_transforms("
            f"'{model}', pretrained='{pretrained}')\"`), or pass --clip-pretrained /path/to/open_clip_model.bin, "
            "or leave clip out of --metrics"
        )
    try:
        with torch.random.fork_rng(devices=[]):  # random weights (pretrained=None) are the same every run
            torch.manual_seed(0)
            net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained, device=device)
        tokenizer = open_clip.get_tokenizer(model)
    except Exception as e:  # hub/network errors differ by version; all mean "weights not here"
        raise MetricUnavailable(
            f"could not load CLIP weights {model}/{pretrained} ({type(e).__name__}: {str(e)[:200]}); download them "
            "once online (they land in the Hugging Face cache), or pass --clip-pretrained /path/to/open_clip_model.bin, "
            "or leave clip out of --metrics"
        ) from None
    return ClipScorer(net, preprocess, tokenizer, device)


def _clip_weights_cached(model: str, tag: str) -> bool:
    """True if open_clip's weights for (model, tag) are already on disk (HF cache or ~/.cache/clip), no network."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise ValueError(f"unknown pretrained tag {tag!r} for {model}; known: {tags}, or a local file, or none")
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, _, sub = cfg["hf_hub"].partition("/")[2].partition("/")
        repo_id = cfg["hf_hub"].split("/")[0] + "/" + repo
        for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(repo_id, f"{sub}{name}" if sub else name), str):
                return True
    url = cfg.get("url") or ""
    cache = Path(os.path.expanduser("~/.cache/clip")) / Path(url).name
    return bool(url) and cache.is_file()
