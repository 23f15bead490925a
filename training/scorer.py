"""Training of the shapes scorer (the attribute classifier of eval/shapes_scorer.py) on rendered scenes.

Train:    python -m training.scorer train [--out eval/weights/shapes_scorer.safetensors]
Accuracy: python -m training.scorer accuracy
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from eval.shapes_scorer import (
    N_COL,
    N_SHP,
    N_SLOT,
    RES,
    WEIGHTS,
    ShapesClassifier,
    adherence,
    load_classifier,
)
from training import shapes as S


# --------------------------------------------------------------------------- data
def scene_targets(scene: S.Scene) -> tuple[np.ndarray, np.ndarray]:
    """Slot targets (9, 4): [present, colour, shape, size] (-1 where absent) and background index."""
    t = np.full((N_SLOT, 4), -1, np.int64)
    t[:, 0] = 0
    for o in scene.objects:
        t[S.POSITIONS.index(o.position)] = (
            1, S.COLOR_NAMES.index(o.color), S.SHAPES.index(o.shape), S.SIZE_NAMES.index(o.size))
    return t, np.int64(S.BACKGROUND_NAMES.index(scene.background))


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


# --------------------------------------------------------------------------- training
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
