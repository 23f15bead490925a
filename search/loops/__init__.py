"""Exact, resumable denoising loops, one file per pipeline family (as `dit_cache/adapters/` is per transformer).

`make_loop(pipe, prompts, seeds, steps, defaults)` picks the loop of the pipeline's class; the search,
prefix sharing, workers and checkpoints only use the `DenoiseLoop` protocol (`base.py`).
"""

from __future__ import annotations

from typing import Any

from .base import DenoiseLoop, LoopError, LoopState, call_default
from .dit import DiTLoop
from .flux import FluxLoop
from .pixart import PixArtLoop, pipeline_size
from .sd3 import SD3Loop
from .wan import WanLoop

__all__ = ["LOOPS", "DenoiseLoop", "LoopError", "LoopState", "call_default", "decoder", "loop_class", "make_loop",
           "pipeline_size"]

LOOPS: tuple[type[DenoiseLoop], ...] = (PixArtLoop, FluxLoop, SD3Loop, WanLoop, DiTLoop)


def loop_class(pipe: Any) -> type[DenoiseLoop]:
    """The loop that reproduces `pipe`'s `__call__` (matched by pipeline class name, base classes included)."""
    names = [c.__name__ for c in type(pipe).__mro__]
    for cls in LOOPS:
        if any(n in cls.pipeline_names for n in names):
            return cls
    known = ", ".join(n for c in LOOPS for n in c.pipeline_names)
    raise LoopError(f"the search has no denoising loop for {type(pipe).__name__}; it runs {known} "
                    "(e.g. --model random-tiny:flux, a pipeline folder or a hub id of one of those)")


def make_loop(pipe: Any, prompts: list[str], seeds: list[int], steps: int,
              defaults: dict[str, Any] | None = None) -> DenoiseLoop:
    """The family loop of `pipe` for these prompts (one seed each), with the model's call defaults."""
    return loop_class(pipe)(pipe, prompts, seeds, steps, defaults)


def decoder(pipe: Any, steps: int, defaults: dict[str, Any] | None = None) -> Any:
    """Final latents -> images (N, 3, H, W) in [0, 1] for this pipeline's family (its loop's `decode`)."""
    return make_loop(pipe, ["decode"], [0], steps, defaults).decode
