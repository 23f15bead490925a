"""Labelled image grids (rows = prompts, columns = schedules) with PIL."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def image_grid(images: list[list[np.ndarray]], col_labels: list[str], row_labels: list[str],
               path: str | Path, cell: int = 128, label_width: int = 260) -> Path:
    """Save a grid; images[r][c] is uint8 (H, W, 3). Cells are upscaled (nearest) to `cell` pixels."""
    rows, cols = len(images), len(col_labels)
    head = 34
    canvas = Image.new("RGB", (label_width + cols * cell, head + rows * cell), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for c, label in enumerate(col_labels):
        draw.text((label_width + c * cell + 4, 4), "\n".join(textwrap.wrap(label, 18)[:2]), fill="black", font=font)
    for r, label in enumerate(row_labels):
        y = head + r * cell
        draw.text((4, y + 4), "\n".join(textwrap.wrap(label, 40)[:6]), fill="black", font=font)
        for c in range(cols):
            tile = Image.fromarray(images[r][c]).resize((cell - 4, cell - 4), Image.NEAREST)
            canvas.paste(tile, (label_width + c * cell + 2, y + 2))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
