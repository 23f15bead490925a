"""Search checkpoints: one JSON file (no pickle), written atomically after every generation."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dit_cache.io import OutLock  # noqa: F401  (the run-folder lock, shared with `dit-cache eval`)

CHECKPOINT = "checkpoint.json"
CHECKPOINT_VERSION = 1
FORMAT = "dit-cache-search-checkpoint"


@dataclass
class SearchState:
    """What a checkpoint holds besides the config."""

    generation: int = -1
    population: list[str] = field(default_factory=list)  # genome hex, in selection order
    fitness: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {genome, macs, quality, metrics}
    rng: Any = None  # random.Random state as JSON (rng_to_json)
    history: list[dict[str, Any]] = field(default_factory=list)
    hv_ref: list[float] | None = None
    cache_hits: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    step_profile: dict[str, float] = field(default_factory=dict)  # step -> quality loss of reusing it alone
    screened: int = 0  # children bred but never evaluated (search.screen)
    prompts_sha256: str | None = None  # of the calibration prompts used (a changed prompt file refuses --resume)


def write_checkpoint(path: Path, config: dict[str, Any], shape: tuple[int, ...], state: SearchState) -> None:
    """Write config, genome shape and state to `path` (tmp file + rename: a kill never leaves half a file)."""
    data = {"format": FORMAT, "version": CHECKPOINT_VERSION, "config": config, "shape": list(shape), **asdict(state)}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> tuple[dict[str, Any], SearchState]:
    """(raw data, state) of a checkpoint; ValueError naming the fix when missing or foreign."""
    if not path.is_file():
        raise ValueError(f"--resume: no checkpoint at {path}; start the run without --resume")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); start a new run with another --out") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} is not a dit-cache search checkpoint (version {CHECKPOINT_VERSION})")
    need = {"config": dict, "shape": list, "generation": int, "population": list, "fitness": dict, "rng": list,
            "history": list}
    bad = [k for k, t in need.items() if not isinstance(data.get(k), t)]
    if bad or not isinstance(data.get("hv_ref"), (list, type(None))):
        raise ValueError(f"{path} is damaged (missing or malformed: {', '.join(bad) or 'hv_ref'}); start a new "
                         "run with another --out (the front files in it are still valid schedules)")
    return data, SearchState(**{k: data[k] for k in SearchState.__dataclass_fields__ if k in data})


def rng_to_json(state: tuple) -> list:
    """random.Random.getstate() as JSON-ready lists."""
    version, internal, gauss = state
    return [version, list(internal), gauss]


def rng_from_json(data: list) -> tuple:
    """Inverse of `rng_to_json`."""
    return (data[0], tuple(data[1]), data[2])


def prompts_digest(prompts: list[str]) -> str:
    """sha256 of the calibration prompts (their text and order)."""
    import hashlib

    return hashlib.sha256(json.dumps(prompts).encode()).hexdigest()
