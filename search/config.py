"""Search settings, errors and the calibration prompts file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import genome as G
from .objectives import OBJECTIVES
from .workers import BACKENDS


class SearchError(ValueError):
    """Bad search input (prompts, model, schedule space, checkpoint)."""


@dataclass
class SearchConfig:
    """Settings of one search run (stored in the checkpoint; resume needs the same values)."""

    model: str = "tiny"
    prompts: str = "calib_prompts/shapes_calib.txt"
    num_prompts: int | None = None  # first N prompts of the file (None = all)
    population: int = 24
    generations: int = 10
    objective: str = "fidelity"
    steps: int = 20
    seed: int = 0
    workers: int = 1
    backend: str = "local"
    batch_size: int = 16
    memory_budget_mb: int = 2048
    spill_mb: int = 0  # disk budget for evicted prefix states in <out>/prefix_spill (0: evicted states are dropped)
    prefix_sharing: bool = True
    cxpb: float = 0.9
    cx_points: int = 4
    mutpb: float = 1.0
    indpb: float | None = None
    late_bias: float = 0.0
    clip_weights: str | None = None
    forecast: bool = False  # cells may also be Taylor forecasts (Schedule FORECAST cells)
    forecast_order: int = 1
    init: list[str] = field(default_factory=list)  # schedule files (dit-cache or ECAD) seeding the population
    multi_fidelity: bool = False  # children: first prompt batch, the rest only if they can still reach the front
    mf_margin: float = 0.1
    profile_seeds: bool = True  # probe each step's reuse error first and seed "reuse the k best steps"
    screen_keep: float = 1.0  # < 1: evaluate only this fraction of a population per generation (search.screen)
    screen_pool: int = 4  # with screening: breed this many populations of children to choose from
    screen_generations: int = 1  # with screening: breed the pool over this many generations on the surrogate

    def check(self) -> None:
        """Raise SearchError naming the fix for an invalid setting."""
        if self.objective not in OBJECTIVES:
            raise SearchError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.backend not in BACKENDS:
            raise SearchError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.population < 4:
            raise SearchError(f"--population must be >= 4, got {self.population}")
        if self.generations < 0 or self.steps < 2 or self.workers < 1:
            raise SearchError("--generations must be >= 0, --steps >= 2 and --workers >= 1")
        if self.forecast_order < 0:
            raise SearchError(f"--forecast-order must be >= 0, got {self.forecast_order}")
        G.Operators(self.cxpb, self.cx_points, self.mutpb, self.indpb, self.late_bias).validate()
        if self.mf_margin < 0:
            raise SearchError(f"--mf-margin must be >= 0, got {self.mf_margin}")
        if not 0 < self.screen_keep <= 1 or self.screen_pool < 1 or self.screen_generations < 1:
            raise SearchError(f"--screen-keep must be in (0, 1], --screen-pool >= 1 and --screen-generations >= 1, got "
                              f"{self.screen_keep}, {self.screen_pool} and {self.screen_generations}")

    def changed_from(self, old: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """{setting: (old, new)} for the result-changing settings where the config dict `old` (a checkpoint's or a
        history's) differs from this one; settings `old` lacks take their defaults."""
        before = SearchConfig(**{k: v for k, v in old.items() if k in SearchConfig.__dataclass_fields__}).result_keys()
        return {k: (v, self.result_keys()[k]) for k, v in before.items() if self.result_keys()[k] != v}

    def result_keys(self) -> dict[str, Any]:
        """Settings that change results (a resumed run must match them)."""
        d = asdict(self)
        for k in ("generations", "workers", "backend", "memory_budget_mb", "spill_mb", "prefix_sharing"):
            d.pop(k)
        return d


def read_prompts(path: str | Path, n: int | None = None) -> list[str]:
    """Prompts of a file (optionally the first n), read by `eval.prompts.load_prompts`: one per line, a
    PartiPrompts TSV, an ImageReward JSON, or `shapes:<split>`; clear errors for missing/empty files."""
    from eval.prompts import load_prompts

    try:
        return load_prompts(path, n)
    except FileNotFoundError:
        raise SearchError(f"prompts file not found: {path} (see calib_prompts/ for the shipped sets)") from None
    except ValueError as e:
        raise SearchError(str(e)) from None
