"""Procedural, deterministic shapes data set with compositional captions (nothing downloaded)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 200),
    "cyan": (40, 210, 220),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
SIZES: dict[str, float] = {"small": 0.09, "large": 0.15}  # half-extent as a fraction of the image side
POSITIONS: tuple[str, ...] = (
    "top left", "top center", "top right",
    "middle left", "center", "middle right",
    "bottom left", "bottom center", "bottom right",
)
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"black": (15, 15, 15), "gray": (128, 128, 128), "white": (240, 240, 240)}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)
BACKGROUND_NAMES: tuple[str, ...] = tuple(BACKGROUNDS)
SPLITS: tuple[str, ...] = ("train", "val", "heldout")


@dataclass(frozen=True)
class Obj:
    """One object: shape, colour, size and grid position."""

    shape: str
    color: str
    size: str
    position: str


@dataclass(frozen=True)
class Scene:
    """One or two objects (at different positions) on a coloured background."""

    objects: tuple[Obj, ...]
    background: str


# --------------------------------------------------------------------------- captions
# Each template: (scene format with {objs} and {bg}, object format, joiner between objects).
TEMPLATES: tuple[tuple[str, str, str], ...] = (
    ("{objs} on a {bg} background", "a {size} {color} {shape} in the {pos}", " and "),
    ("{objs}, {bg} background", "{posh}: {size} {color} {shape}", "; "),
    ("{bg} background with {objs}", "a {size} {color} {shape} at the {pos}", " and "),
    ("{objs}, on {bg}", "{color} {shape}, {size}, {pos}", "; "),
)
NUM_TEMPLATES = len(TEMPLATES)


def caption(scene: Scene, template_id: int = 0) -> str:
    """Caption a scene with one of the `NUM_TEMPLATES` templates."""
    fmt, ofmt, join = TEMPLATES[template_id % NUM_TEMPLATES]
    objs = join.join(
        ofmt.format(size=o.size, color=o.color, shape=o.shape, pos=o.position, posh=o.position.replace(" ", "-"))
        for o in scene.objects
    )
    return fmt.format(objs=objs, bg=scene.background)


def _alt(names) -> str:
    return "(" + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) + ")"


def _template_regex(tid: int, n_obj: int) -> re.Pattern:
    fmt, ofmt, join = TEMPLATES[tid]
    fields = {"size": _alt(SIZES), "color": _alt(COLORS), "shape": _alt(SHAPES), "pos": _alt(POSITIONS),
              "posh": _alt([p.replace(" ", "-") for p in POSITIONS])}
    order = re.findall(r"\{(\w+)\}", ofmt)
    obj_re = re.escape(ofmt)
    for f in set(order):
        obj_re = obj_re.replace(re.escape("{" + f + "}"), fields[f])
    objs = re.escape(join).join([obj_re] * n_obj)
    full = re.escape(fmt).replace(re.escape("{objs}"), objs).replace(re.escape("{bg}"), _alt(BACKGROUNDS))
    return re.compile("^" + full + "$"), order, fmt.index("{objs}") < fmt.index("{bg}")


_REGEXES = [(_template_regex(t, n)) for n in (1, 2) for t in range(NUM_TEMPLATES)]


def parse_caption(text: str) -> Scene:
    """Invert `caption` (any template, one or two objects); raises ValueError if unparseable."""
    text = " ".join(text.lower().strip().split())
    for rx, order, objs_first in _REGEXES:
        m = rx.match(text)
        if m is None:
            continue
        g = list(m.groups())
        bg = g.pop(-1) if objs_first else g.pop(0)
        objs = []
        for i in range(0, len(g), len(order)):
            d = dict(zip(order, g[i: i + len(order)]))
            pos = d["pos"] if "pos" in d else d["posh"].replace("-", " ")
            objs.append(Obj(shape=d["shape"], color=d["color"], size=d["size"], position=pos))
        return Scene(objects=tuple(objs), background=bg)
    raise ValueError(f"cannot parse caption: {text!r}")


def vocabulary() -> list[str]:
    """All words and punctuation tokens used by the captions (sorted, deterministic)."""
    words: set[str] = {":", ",", ";", "-"}
    for fmt, ofmt, join in TEMPLATES:
        words.update(re.sub(r"\{\w+\}|[,;:]", " ", fmt + " " + ofmt + " " + join).split())
    words.update(COLORS, SHAPES, SIZES, BACKGROUNDS)
    for p in POSITIONS:
        words.update(p.split())
    return sorted(words)


# --------------------------------------------------------------------------- sampling and splits
def sample_scene(rng: np.random.Generator, p_two: float = 0.4) -> Scene:
    """Sample a random scene: one object, or two at different positions with probability `p_two`."""
    n = 2 if rng.random() < p_two else 1
    pos = rng.choice(len(POSITIONS), size=n, replace=False)
    objs = tuple(
        Obj(
            shape=SHAPES[rng.integers(len(SHAPES))],
            color=COLOR_NAMES[rng.integers(len(COLORS))],
            size=SIZE_NAMES[rng.integers(len(SIZES))],
            position=POSITIONS[int(p)],
        )
        for p in pos
    )
    return Scene(objects=objs, background=BACKGROUND_NAMES[rng.integers(len(BACKGROUNDS))])


def scene_split(scene: Scene) -> str:
    """Split of a scene ('train' 80 %, 'val' 10 %, 'heldout' 10 %) by hash of its canonical caption.

    All captions of a scene share its split, so no exact caption (and no scene) is in two splits.
    """
    h = int(hashlib.sha256(caption(scene, 0).encode()).hexdigest()[:8], 16) % 100
    return "train" if h < 80 else ("val" if h < 90 else "heldout")


def caption_split(text: str) -> str:
    """Split of a caption string (via its parsed scene)."""
    return scene_split(parse_caption(text))


def sample_split_scene(rng: np.random.Generator, split: str, p_two: float = 0.4) -> Scene:
    """Rejection-sample a scene belonging to `split`."""
    while True:
        s = sample_scene(rng, p_two)
        if scene_split(s) == split:
            return s


def split_prompts(split: str, n: int, seed: int = 0, n_objects: int | None = 1) -> list[tuple[Scene, str]]:
    """Deterministic list of `n` distinct (scene, caption) pairs of `split` (optionally fixed object count)."""
    rng = np.random.default_rng(seed)
    p_two = {None: 0.4, 1: 0.0, 2: 1.0}[n_objects]
    out, seen = [], set()
    for _ in range(200 * n):
        s = sample_split_scene(rng, split, p_two)
        c = caption(s, int(rng.integers(NUM_TEMPLATES)))
        if c not in seen:
            seen.add(c)
            out.append((s, c))
            if len(out) == n:
                break
    return out


# --------------------------------------------------------------------------- rendering
_SS = 4  # supersampling factor for anti-aliasing


def _mask(shape: str, x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        s = r * 0.88
        return (np.abs(dx) <= s) & (np.abs(dy) <= s)
    if shape == "triangle":  # upward, apex at top
        h = r * 1.1
        return (dy <= h * 0.8) & (dy >= -h) & (np.abs(dx) <= (dy + h) * 0.62)
    if shape == "cross":
        w = r * 0.38
        return ((np.abs(dx) <= r) & (np.abs(dy) <= w)) | ((np.abs(dy) <= r) & (np.abs(dx) <= w))
    raise ValueError(shape)


def position_center(position: str) -> tuple[float, float]:
    """(x, y) centre of a grid position as fractions of the image side."""
    i = POSITIONS.index(position)
    return ((i % 3) * 2 + 1) / 6.0, ((i // 3) * 2 + 1) / 6.0


def render(scene: Scene, size: int = 32, jitter: np.random.Generator | None = None) -> np.ndarray:
    """Render a scene as a uint8 (size, size, 3) array; `jitter` (an rng) adds +-3 % position noise."""
    n = size * _SS
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    x, y = (x + 0.5) / n, (y + 0.5) / n
    img = np.empty((n, n, 3), np.float32)
    img[:] = BACKGROUNDS[scene.background]
    for o in scene.objects:
        cx, cy = position_center(o.position)
        if jitter is not None:
            cx, cy = cx + jitter.uniform(-0.03, 0.03), cy + jitter.uniform(-0.03, 0.03)
        img[_mask(o.shape, x, y, cx, cy, SIZES[o.size])] = COLORS[o.color]
    img = img.reshape(size, _SS, size, _SS, 3).mean(axis=(1, 3))  # (size, size, 3)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def render_batch(scenes: list[Scene], size: int = 32, jitter: np.random.Generator | None = None) -> np.ndarray:
    """Render scenes into a uint8 (N, size, size, 3) array."""
    return np.stack([render(s, size, jitter) for s in scenes])
