"""Offline scorers for the procedural shapes data: attribute classifier (prompt adherence) and shapes-FID features.

The weights are trained by `python -m training.scorer train` (training/scorer.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training import shapes as S

WEIGHTS = Path(__file__).parent / "weights" / "shapes_scorer.safetensors"
RES = 32  # the classifier's input resolution
N_SLOT = len(S.POSITIONS)
N_COL, N_SHP, N_SIZ, N_BG = len(S.COLORS), len(S.SHAPES), len(S.SIZES), len(S.BACKGROUNDS)
SLOT_OUT = 1 + N_COL + N_SHP + N_SIZ  # present logit + colour + shape + size logits per position slot
ATTRS = ("color", "shape", "size", "position")


class ShapesClassifier(nn.Module):
    """Small CNN: one head set (present?, colour, shape, size) per 3x3 position slot, plus background."""

    def __init__(self, width: int = 32, feat_dim: int = 256):
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.convs = nn.Sequential(
            block(3, w), block(w, w), nn.MaxPool2d(2),  # 16x16
            block(w, 2 * w), block(2 * w, 2 * w), nn.MaxPool2d(2),  # 8x8
            block(2 * w, 4 * w), nn.MaxPool2d(2),  # 4x4
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 16, feat_dim), nn.ReLU(inplace=True))
        self.slots = nn.Linear(feat_dim, N_SLOT * SLOT_OUT)
        self.bg = nn.Linear(feat_dim, N_BG)

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """uint8 (N,3,H,W) / float in [0,1] -> float (N,3,32,32) in [-1,1]."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[-1] != RES or x.shape[-2] != RES:
            x = F.interpolate(x, size=(RES, RES), mode="bilinear", antialias=True, align_corners=False)
        return x * 2 - 1

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, feat_dim)."""
        return self.fc(self.convs(self.prepare(images)))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> slot logits (N, 9, 13), background logits (N, 3)."""
        f = self.features(images)
        return self.slots(f).view(-1, N_SLOT, SLOT_OUT), self.bg(f)


class ShapesFeatures(nn.Module):
    """Feature extractor for `torchmetrics.image.fid.FrechetInceptionDistance(feature=ShapesFeatures())`."""

    def __init__(self, classifier: ShapesClassifier | None = None):
        super().__init__()
        self.net = classifier if classifier is not None else load_classifier()
        self.net.eval()
        self.num_features = self.net.fc[1].out_features

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0,1] float images (N,3,H,W) -> features (N, 256)."""
        return self.net.features(images)


def load_classifier(path: str | Path = WEIGHTS) -> ShapesClassifier:
    """Load the trained classifier (eval mode, float32, CPU)."""
    from safetensors.torch import load_file

    m = ShapesClassifier()
    m.load_state_dict(load_file(str(path)))
    return m.eval()


def shapes_fid(fake: torch.Tensor, real: torch.Tensor, classifier: ShapesClassifier | None = None) -> float:
    """shapes-FID between uint8 image batches (N,3,H,W) using the classifier's penultimate features."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=ShapesFeatures(classifier))
    fid.update(real, real=True)
    fid.update(fake, real=False)
    return float(fid.compute())


# --------------------------------------------------------------------------- prediction, scoring
@torch.no_grad()
def predict(images: torch.Tensor, classifier: ShapesClassifier | None = None, batch: int = 256) -> list[S.Scene]:
    """Read the scene (objects in slots with present prob > 0.5, background) of each uint8 image (N,3,H,W)."""
    clf = classifier if classifier is not None else load_classifier()
    clf.eval()
    out = []
    for i in range(0, len(images), batch):
        slots, bg = clf(images[i: i + batch])
        slots = slots.float()
        for s, b in zip(slots, bg):
            objs = []
            for k in range(N_SLOT):
                if s[k, 0] > 0:
                    c = int(s[k, 1: 1 + N_COL].argmax())
                    sh = int(s[k, 1 + N_COL: 1 + N_COL + N_SHP].argmax())
                    sz = int(s[k, 1 + N_COL + N_SHP:].argmax())
                    objs.append(S.Obj(S.SHAPES[sh], S.COLOR_NAMES[c], S.SIZE_NAMES[sz], S.POSITIONS[k]))
            out.append(S.Scene(tuple(objs), S.BACKGROUND_NAMES[int(b.argmax())]))
    return out


def _match(target: S.Obj, pred: S.Obj) -> dict[str, bool]:
    return {a: getattr(target, a) == getattr(pred, a) for a in ATTRS}


def compare(target: S.Scene, pred: S.Scene) -> dict[str, float]:
    """Per-attribute correctness of a predicted scene against the prompt's scene (GenEval-style).

    Each target object is matched (greedily, without reuse) to the predicted object agreeing on the most
    attributes; colour/shape/size/position are averaged over target objects (0 if nothing is left to match).
    `all_correct` needs every object fully right, the right object count and the right background.
    """
    left = list(pred.objects)
    res = {a: 0.0 for a in ATTRS}
    full = True
    for t in target.objects:
        if not left:
            full = False
            continue
        best = max(left, key=lambda p: (sum(_match(t, p).values()), _match(t, p)["position"]))
        left.remove(best)
        m = _match(t, best)
        for a in ATTRS:
            res[a] += m[a] / len(target.objects)
        full &= all(m.values())
    res["count"] = float(len(pred.objects) == len(target.objects))
    res["background"] = float(pred.background == target.background)
    res["all_correct"] = float(full and res["count"] == 1.0 and res["background"] == 1.0)
    return res


def adherence(images: torch.Tensor, prompts: list[str], classifier: ShapesClassifier | None = None,
              per_sample: bool = False) -> dict:
    """Prompt adherence of uint8 images (N,3,H,W) to their prompts: mean per-attribute accuracy + all-correct."""
    preds = predict(images, classifier)
    rows = [compare(S.parse_caption(p), q) for p, q in zip(prompts, preds)]
    keys = list(rows[0])
    out = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    out["n"] = len(rows)
    if per_sample:
        out["per_sample"] = rows
    return out

