"""Offline scorers for the procedural shapes data: attribute classifier (prompt adherence) and shapes-FID features.

Train:    python -m eval.shapes_scorer train [--out eval/weights/shapes_scorer.safetensors]
Accuracy: python -m eval.shapes_scorer accuracy
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dit_cache.zoo import shapes as S

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


# --------------------------------------------------------------------------- targets, prediction, scoring
def scene_targets(scene: S.Scene) -> tuple[np.ndarray, np.ndarray]:
    """Slot targets (9, 4): [present, colour, shape, size] (-1 where absent) and background index."""
    t = np.full((N_SLOT, 4), -1, np.int64)
    t[:, 0] = 0
    for o in scene.objects:
        t[S.POSITIONS.index(o.position)] = (
            1, S.COLOR_NAMES.index(o.color), S.SHAPES.index(o.shape), S.SIZE_NAMES.index(o.size))
    return t, np.int64(S.BACKGROUND_NAMES.index(scene.background))


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


# --------------------------------------------------------------------------- training
def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Robustness to generated images: blur, noise, small colour/brightness shifts. x: float (N,3,H,W) in [0,1]."""
    n = x.shape[0]
    blur = torch.rand(n, 1, 1, 1, generator=g) < 0.4
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
    xb = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=3)
    x = torch.where(blur, xb, x)
    x = x * (1 + 0.06 * (torch.rand(n, 3, 1, 1, generator=g) - 0.5)) + 0.04 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
    x = x + torch.randn(x.shape, generator=g) * torch.rand(n, 1, 1, 1, generator=g) * 0.04
    return x.clamp(0, 1)


def make_data(n: int, seed: int, split: str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
    """Render n jittered scenes (half with two objects) -> uint8 (N,3,32,32), slot targets, bg targets, scenes."""
    rng = np.random.default_rng(seed)
    scenes = [S.sample_scene(rng, 0.5) if split is None else S.sample_split_scene(rng, split, 0.5) for _ in range(n)]
    imgs = S.render_batch(scenes, RES, jitter=rng)
    tg = [scene_targets(s) for s in scenes]
    return (torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(np.stack([t[0] for t in tg])),
            torch.from_numpy(np.stack([t[1] for t in tg])), scenes)


def loss_fn(slots: torch.Tensor, bg: torch.Tensor, ts: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
    """BCE on presence, CE on attributes of present slots, CE on background."""
    loss = F.binary_cross_entropy_with_logits(slots[..., 0], ts[..., 0].float()) + F.cross_entropy(bg, tb)
    pres = ts[..., 0] == 1
    s, t = slots[pres], ts[pres]
    loss = loss + F.cross_entropy(s[:, 1: 1 + N_COL], t[:, 1]) + F.cross_entropy(s[:, 1 + N_COL: 1 + N_COL + N_SHP], t[:, 2])
    return loss + F.cross_entropy(s[:, 1 + N_COL + N_SHP:], t[:, 3])


def train(out: Path, steps: int = 3000, batch: int = 128, n_data: int = 60000, seed: int = 0) -> dict:
    """Train the classifier on freshly rendered procedural scenes and save it as safetensors."""
    import os

    from safetensors.torch import save_file
    from tqdm import tqdm

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    pid = Path("/tmp/dit_train.pid")
    pid.write_text(str(os.getpid()))  # lets a benchmark pause (SIGSTOP/SIGCONT) this process
    t0 = time.time()
    imgs, ts, tb, _ = make_data(n_data, seed)
    m = ShapesClassifier()
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    bar = tqdm(range(steps), desc="scorer")
    for step in bar:
        idx = torch.randint(0, n_data, (batch,), generator=g)
        x = _augment(imgs[idx].float() / 255.0, g)
        slots, bg = m(x)
        loss = loss_fn(slots, bg, ts[idx], tb[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    m.eval()
    if pid.exists() and pid.read_text().strip() == str(os.getpid()):
        pid.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(out))
    info = {"steps": steps, "batch": batch, "n_data": n_data, "seed": seed, "train_time_s": round(time.time() - t0, 1)}
    info.update(accuracy(m))
    return info


@torch.no_grad()
def accuracy(classifier: ShapesClassifier | None = None, n: int = 2000, seed: int = 1234) -> dict:
    """Scorer accuracy on rendered held-out-split scenes scored against their own captions (1 and 2 objects)."""
    clf = classifier if classifier is not None else load_classifier()
    res = {}
    for k, p_two in (("one_object", 0.0), ("two_objects", 1.0)):
        rng = np.random.default_rng(seed + int(p_two))
        scenes = [S.sample_split_scene(rng, "heldout", p_two) for _ in range(n)]
        imgs = torch.from_numpy(S.render_batch(scenes, RES, jitter=rng)).permute(0, 3, 1, 2)
        prompts = [S.caption(s, i % S.NUM_TEMPLATES) for i, s in enumerate(scenes)]
        res[k] = {a: round(v, 4) for a, v in adherence(imgs, prompts, clf).items()}
    return res


def main(argv: list[str] | None = None) -> None:
    """CLI: train | accuracy."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["train", "accuracy"])
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.cmd == "train":
        print(json.dumps(train(a.out, steps=a.steps, seed=a.seed), indent=1))
    else:
        print(json.dumps(accuracy(load_classifier(a.out)), indent=1))


if __name__ == "__main__":
    main()
