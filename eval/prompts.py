"""Prompt-set loaders: plain text / COCO captions (one per line), PartiPrompts TSV, ImageReward-style JSON,
and `shapes:<split>` for the embedded model's procedural captions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

__all__ = ["load_prompts"]


def _plain(path: Path) -> list[str]:
    """One prompt per non-empty line (DrawBench, COCO captions, ImageReward prompt lists)."""
    return [line.strip() for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def _parti(path: Path, category: str | None) -> list[str]:
    """PartiPrompts TSV: the `Prompt` column, optionally only rows whose `Category` equals `category`."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "Prompt" not in rows[0]:
        raise ValueError(f"{path}: a TSV prompt file needs a 'Prompt' column (PartiPrompts format)")
    if category is not None:
        cats = sorted({r.get("Category", "") for r in rows})
        rows = [r for r in rows if r.get("Category", "").lower() == category.lower()]
        if not rows:
            raise ValueError(f"{path}: no prompts in category {category!r}; categories are {cats}")
    return [r["Prompt"].strip() for r in rows if r["Prompt"] and r["Prompt"].strip()]


def _json(path: Path) -> list[str]:
    """ImageReward-style JSON: a list of strings or of objects with a 'prompt' key (or {'prompts': [...]})."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data.get("prompts", data.get("data"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of prompts (strings or objects with a 'prompt' key)")
    out = []
    for i, item in enumerate(data):
        text = item.get("prompt", item.get("caption")) if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise ValueError(f"{path}: item {i} has no 'prompt' string: {str(item)[:80]}")
        out.append(text.strip())
    return out


def _shapes(split: str, n: int | None, seed: int) -> list[str]:
    """Captions of the procedural shapes data (embedded model), split 'train', 'val' or 'heldout'."""
    from training.shapes import SPLITS, split_prompts

    if split not in SPLITS:
        raise ValueError(f"unknown shapes split {split!r}; use shapes:{'|'.join(SPLITS)}")
    return [c for _, c in split_prompts(split, n or 64, seed=seed, n_objects=None)]


def load_prompts(source: str | Path, n: int | None = None, *, category: str | None = None, seed: int = 0) -> list[str]:
    """Prompts from a file (format from the extension: .tsv, .json, else plain text) or `shapes:<split>`; first n."""
    src = str(source)
    if src.startswith("shapes:"):
        prompts = _shapes(src.split(":", 1)[1] or "heldout", n, seed)
    else:
        path = Path(src)
        if not path.is_file():
            raise FileNotFoundError(f"prompt file not found: {path} (pass a .txt, PartiPrompts .tsv, ImageReward "
                                    "JSON file, or shapes:heldout for the embedded model)")
        if category is not None and path.suffix.lower() != ".tsv":
            raise ValueError("--category filters PartiPrompts TSV files only")
        suffix = path.suffix.lower()
        prompts = _parti(path, category) if suffix == ".tsv" else _json(path) if suffix == ".json" else _plain(path)
    if not prompts:
        raise ValueError(f"no prompts in {src}")
    if n is not None:
        if n < 1:
            raise ValueError(f"--num-prompts must be >= 1, got {n}")
        prompts = prompts[:n]
    return prompts
