"""Static caching schedules: every (step, block, component) cell computes, reuses or forecasts.

The one schedule language of dit-cache: the search writes it, the static backend runs it, every
command reads it. Cells (`cells` int8 array [steps, blocks, components]):

* ``COMPUTE`` (1): run the component;
* ``REUSE`` (0): return its raw output cached at the cell's last computed step (ECAD semantics; the
  block still recomputes its adaLN modulation, gates and residual adds at the current step);
* ``FORECAST`` (2): a TaylorSeer forecast of order ``forecast_order`` from the cell's computed steps.

JSON format (schema version 2), one string per block with one character per component:
``"1"`` compute, ``"0"`` reuse, ``"f"`` forecast, ``"-"`` the block has no such component (e.g.
SD3's last block)::

    {"format": "dit-cache-schedule", "schema_version": 2, "family": "pixart", "steps": 20,
     "block_ids": ["0", ...], "components": ["attn1", "attn2", "ff"], "forecast_order": 1,
     "compute": [["111", "111", ...], ...], "metadata": {"name": "fora-2", ...}}

Version 1 files (no ``forecast_order``: ``"f"`` cells are first order) load unchanged. Version 1 front
files of the old ``--forecast`` search kept their forecast cells in ``metadata["forecast_cells"]`` (with
``metadata["forecast_order"]``); they are migrated on load to ``"f"`` cells of that order, which run
exactly as that search measured them, or refused with an error naming the fix.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

FORMAT = "dit-cache-schedule"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
REUSE, COMPUTE, FORECAST = 0, 1, 2  # cell codes of `Schedule.cells`


class ScheduleError(ValueError):
    """A schedule is malformed or does not fit the model / generation it is used with."""


class ScheduleWarning(UserWarning):
    """A schedule was accepted after a documented repair (e.g. ECAD step-0 reuse flags)."""


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=bool, copy=True)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class ScheduleSpace:
    """The cells a schedule ranges over for one model: family, block ids, component names, applicability."""

    family: str
    block_ids: tuple[str, ...]
    components: tuple[str, ...]
    applicable: np.ndarray  # bool [blocks, components]; False = the block has no such component

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_ids", tuple(str(b) for b in self.block_ids))
        object.__setattr__(self, "components", tuple(self.components))
        object.__setattr__(self, "applicable", _frozen(self.applicable))
        shape = (len(self.block_ids), len(self.components))
        if self.applicable.shape != shape:
            raise ScheduleError(f"applicability mask has shape {self.applicable.shape}, expected {shape}")
        for what, names in (("block id", self.block_ids), ("component", self.components)):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ScheduleError(f"duplicate {what}s: {dup}")

    @property
    def shape(self) -> tuple[int, int]:
        """(blocks, components)."""
        return len(self.block_ids), len(self.components)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ScheduleSpace)
            and (self.family, self.block_ids, self.components) == (other.family, other.block_ids, other.components)
            and np.array_equal(self.applicable, other.applicable)
        )

    def __hash__(self) -> int:
        return hash((self.family, self.block_ids, self.components, self.applicable.tobytes()))

    def describe_mismatch(self, other: ScheduleSpace) -> str | None:
        """Why a schedule made for `self` cannot run on a model with space `other` (None if it can)."""
        if self.family != other.family:
            return f"the schedule is for family {self.family!r} but the model is {other.family!r}"
        if self.block_ids != other.block_ids:
            return (
                f"the schedule has {len(self.block_ids)} blocks ({_ids(self.block_ids)}) but the model has "
                f"{len(other.block_ids)} ({_ids(other.block_ids)})"
            )
        if self.components != other.components:
            return f"the schedule's components {list(self.components)} differ from the model's {list(other.components)}"
        if not np.array_equal(self.applicable, other.applicable):
            return "the schedule's per-block components differ from the model's"
        return None


def _block_groups(ids: Sequence[str]) -> dict[str, list[int]]:
    """Block indices per group, the group being an id's non-numeric prefix ("" for "0", "single_" for "single_3")."""
    groups: dict[str, list[int]] = {}
    for i, b in enumerate(ids):
        groups.setdefault(b.rstrip("0123456789"), []).append(i)
    return groups


def _ids(ids: Sequence[str]) -> str:
    return f"{ids[0]}..{ids[-1]}" if len(ids) > 3 else ", ".join(ids)


@dataclass(frozen=True, eq=False)
class Schedule:
    """Immutable compute/reuse plan: ``compute[step, block, component]`` is True where the component runs."""

    compute: np.ndarray  # bool [steps, blocks, components]
    space: ScheduleSpace
    metadata: Mapping[str, Any] = field(default_factory=dict)
    forecast: np.ndarray | None = None  # bool [steps, blocks, components]: reuse cells that forecast; None = none
    forecast_order: int = 1  # Taylor order O of forecast cells (0 = forecast equals reuse)

    def __post_init__(self) -> None:
        if isinstance(self.forecast_order, bool) or not isinstance(self.forecast_order, (int, np.integer)) \
                or self.forecast_order < 0:
            raise ScheduleError(f"forecast_order must be an integer >= 0, got {self.forecast_order!r}")
        object.__setattr__(self, "forecast_order", int(self.forecast_order))
        arr = np.asarray(self.compute)
        if arr.dtype != bool:
            if not np.isin(arr, (0, 1)).all():
                raise ScheduleError("compute must hold only booleans (True = compute, False = reuse)")
            arr = arr.astype(bool)
        nb, nc = self.space.shape
        if arr.ndim != 3 or arr.shape[1:] != (nb, nc) or arr.shape[0] < 1:
            raise ScheduleError(
                f"compute has shape {arr.shape}, expected (steps >= 1, {nb} blocks, {nc} components) "
                f"for blocks {_ids(self.space.block_ids)} and components {list(self.space.components)}"
            )
        na = ~self.space.applicable
        if (~arr[:, na]).any():
            raise ScheduleError("cells of components a block does not have must be True (compute)")
        if not arr[0].all():
            raise ScheduleError(
                f"step 0 reuses {_cells(self.space, ~arr[0])}, but nothing is cached before step 0: "
                "every component must compute on step 0 (use Schedule.repaired() to mark them computed)"
            )
        object.__setattr__(self, "compute", _frozen(arr))
        if self.forecast is not None:
            fc = np.asarray(self.forecast, dtype=bool)
            if fc.shape != arr.shape:
                raise ScheduleError(f"forecast has shape {fc.shape}, expected {arr.shape} like compute")
            if (fc & arr).any():
                raise ScheduleError("forecast cells must be reuse cells (compute False): a cell computes or forecasts")
            object.__setattr__(self, "forecast", _frozen(fc) if fc.any() else None)
        object.__setattr__(self, "metadata", MappingProxyType(json.loads(json.dumps(dict(self.metadata)))))

    # -- views -------------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        """Number of denoising steps."""
        return self.compute.shape[0]

    @property
    def family(self) -> str:
        """Model family the schedule is for."""
        return self.space.family

    @property
    def name(self) -> str:
        """metadata['name'] or 'unnamed'."""
        return str(self.metadata.get("name", "unnamed"))

    @property
    def forecast_mask(self) -> np.ndarray:
        """Bool [steps, blocks, components]: True where a reused cell is forecast (all False if none)."""
        return self.forecast if self.forecast is not None else np.zeros_like(self.compute)

    @property
    def cells(self) -> np.ndarray:
        """Int8 [steps, blocks, components]: COMPUTE, REUSE or FORECAST per cell."""
        out = self.compute.astype(np.int8)
        out[self.forecast_mask] = FORECAST
        return out

    @classmethod
    def from_cells(cls, cells: np.ndarray, space: ScheduleSpace, metadata: Mapping[str, Any] | None = None,
                   forecast_order: int = 1) -> Schedule:
        """A schedule from an int8 cell array (COMPUTE / REUSE / FORECAST), as the search evolves it."""
        c = np.asarray(cells)
        bad = ~np.isin(c, (REUSE, COMPUTE, FORECAST))
        if bad.any():
            raise ScheduleError(f"cells must be {REUSE} (reuse), {COMPUTE} (compute) or {FORECAST} (forecast); "
                                f"got {sorted(set(c[bad].tolist()))}")
        fc = c == FORECAST
        return cls(c == COMPUTE, space, metadata or {}, fc if fc.any() else None, forecast_order)

    def with_forecast(self, cells: np.ndarray | None = None, order: int | None = None) -> Schedule:
        """A copy whose reuse cells (or those of them in `cells`) forecast instead of reusing."""
        mask = ~self.compute & self.space.applicable
        if cells is not None:
            mask &= np.asarray(cells, dtype=bool)
        return Schedule(self.compute, self.space, {**self.metadata}, mask,
                        self.forecast_order if order is None else order)

    def compute_fraction(self) -> float:
        """Fraction of applicable component evaluations that are computed."""
        app = np.broadcast_to(self.space.applicable, self.compute.shape)
        return float(self.compute[app].mean())

    def evaluations(self) -> int:
        """Number of component evaluations per transformer call sequence (one per step)."""
        return int((self.compute & self.space.applicable).sum())

    def digest(self) -> str:
        """Stable hash of the plan (space + cells, not metadata): equal plans have equal digests."""
        payload = json.dumps(self._cells_json(), sort_keys=True) + "|" + self.family
        payload += "|" + ",".join(self.space.block_ids) + "|" + ",".join(self.space.components)
        if self.forecast is not None and self.forecast_order != 1:  # first-order digests as before v2
            payload += f"|order={self.forecast_order}"
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Schedule)
            and self.space == other.space
            and np.array_equal(self.compute, other.compute)
            and np.array_equal(self.forecast_mask, other.forecast_mask)
            and (self.forecast is None or self.forecast_order == other.forecast_order)
            and dict(self.metadata) == dict(other.metadata)
        )

    def __hash__(self) -> int:
        return hash(self.digest())

    def __repr__(self) -> str:
        return (
            f"Schedule({self.name!r}, family={self.family!r}, steps={self.steps}, blocks={self.space.shape[0]}, "
            f"components={list(self.space.components)}, compute={self.compute_fraction():.1%})"
        )

    def with_metadata(self, **updates: Any) -> Schedule:
        """A copy with metadata entries added or replaced."""
        return Schedule(self.compute, self.space, {**self.metadata, **updates}, self.forecast, self.forecast_order)

    # -- transformations ---------------------------------------------------------------------
    @classmethod
    def repaired(cls, compute: np.ndarray, space: ScheduleSpace, metadata: Mapping[str, Any] | None = None,
                 forecast: np.ndarray | None = None, forecast_order: int = 1) -> Schedule:
        """Build a schedule, marking step-0 reuse cells and inapplicable cells as computed (warns once)."""
        arr = np.array(compute, dtype=bool, copy=True)
        bad = ~arr[0] & space.applicable
        if bad.any():
            warnings.warn(
                f"step 0 cannot reuse (nothing is cached yet); computing {_cells(space, bad)} instead",
                ScheduleWarning,
                stacklevel=2,
            )
        arr[0] = True
        arr[:, ~space.applicable] = True
        fc = None if forecast is None else np.asarray(forecast, dtype=bool) & ~arr
        return cls(arr, space, metadata or {}, fc, forecast_order)

    def resample(self, steps: int) -> Schedule:
        """The schedule for another step count, keeping each cell's compute density and rhythm.

        Each computed step i of a cell owns the run up to the cell's next computed step (gap g): every
        step of that run carries the density 1/g (a run sums to one compute). Step i of S covers the
        normalised time [i/S, (i+1)/S); new step j of S' gets the density mass
        ``m_j = Σ_i d_i · S'·|step j ∩ step i|``, and computes when an integer lies in (B_{j−1}, B_j],
        B_j = Σ_{j'<j} m_{j'} (step 0 always computes). A periodic schedule (FORA-N) becomes the native
        FORA-N at the new step count; nearest-step sampling aliased it (FORA-2 20→10 turned into
        "compute 5 steps, reuse 5"). A new reuse step forecasts when the cell's nearest old non-computed
        step forecasts.
        """
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ScheduleError(f"cannot resample to {steps!r} steps: give a whole number >= 1")
        if steps == self.steps:
            return self
        w = _overlap(self.steps, int(steps))  # [S', S]: fraction of new step j covered by old step i
        mass = np.einsum("ji,ibc->jbc", w, _run_density(self.compute))
        before = np.floor(np.cumsum(mass, axis=0) - mass + 1e-9)
        arr = np.diff(before, axis=0, prepend=-1) > 0
        arr[0] = True
        arr[:, ~self.space.applicable] = True
        fc = None
        if self.forecast is not None:  # a new reuse step forecasts as the cell's nearest old reuse/forecast step
            dist = np.abs((np.arange(steps) + 0.5)[:, None] / steps - (np.arange(self.steps) + 0.5)[None, :] / self.steps)
            dist = np.where(self.compute[None], np.inf, dist[:, :, None, None])  # [S', S, blocks, components]
            fc = np.take_along_axis(self.forecast[None], dist.argmin(1)[:, None], 1)[:, 0] & ~arr
        meta = {**self.metadata, "name": f"{self.name}@{self.steps}to{steps}", "resampled_from_steps": self.steps}
        return Schedule(arr, self.space, meta, fc, self.forecast_order)

    def to_space(self, space: ScheduleSpace) -> Schedule:
        """The schedule for another block count of the same family (e.g. a deeper variant).

        Blocks are matched per block group (the ids' prefix: FLUX's double blocks "0".. and single blocks
        "single_0"..) by relative depth: new block j of n' takes the cells of old block round(j·(n−1)/(n'−1))
        of n, so the first and last blocks map to each other and every block of the target is covered. Cells
        the target's blocks lack stay computed; a target cell the old block lacked computes.
        """
        if space == self.space:
            return self
        if space.family != self.space.family or space.components != self.space.components:
            raise ScheduleError(f"schedule {self.name!r} transfers to another block count of its family "
                                f"({self.space.family}, components {list(self.space.components)}); the target is "
                                f"{space.family} with {list(space.components)}")
        old, new = _block_groups(self.space.block_ids), _block_groups(space.block_ids)
        if list(old) != list(new):
            raise ScheduleError(f"schedule {self.name!r} has block groups {list(old) or ['(numbered)']} but the "
                                f"target has {list(new) or ['(numbered)']}: blocks cannot be matched")
        src = np.zeros(len(space.block_ids), dtype=int)
        for g, idx in new.items():
            o = old[g]
            pos = np.rint(np.arange(len(idx)) * (len(o) - 1) / max(1, len(idx) - 1)).astype(int)
            src[idx] = np.asarray(o)[pos]
        arr = self.compute[:, src].copy()
        arr[:, ~space.applicable] = True
        arr[:, space.applicable & ~self.space.applicable[src]] = True
        fc = None if self.forecast is None else self.forecast[:, src] & ~arr
        meta = {**self.metadata, "name": f"{self.name}@{len(space.block_ids)}blocks",
                "transferred_from_blocks": len(self.space.block_ids)}
        return Schedule(arr, space, meta, fc, self.forecast_order)

    # -- JSON --------------------------------------------------------------------------------
    def _cells_json(self) -> list[list[str]]:
        app, fc = self.space.applicable, self.forecast_mask
        return [
            ["".join("-" if not app[b, c] else ("1" if step[b, c] else "f" if fc[s, b, c] else "0")
                     for c in range(step.shape[1]))
             for b in range(step.shape[0])]
            for s, step in enumerate(self.compute)
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (schema version 2)."""
        return {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "family": self.family,
            "steps": self.steps,
            "block_ids": list(self.space.block_ids),
            "components": list(self.space.components),
            "forecast_order": self.forecast_order,
            "compute": self._cells_json(),
            "metadata": dict(self.metadata),
        }

    def save(self, path: str | Path) -> Path:
        """Write the schedule as JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, repair: bool = False) -> Schedule:
        """Parse a schedule dict (schema 1 or 2); raises ScheduleError naming the first problem found."""
        _check_header(data)
        block_ids, comps = list(data["block_ids"]), list(data["components"])
        arr, fc, app = _parse_cells(data["compute"], block_ids, comps)
        space = ScheduleSpace(data["family"], tuple(block_ids), tuple(comps), app)
        meta = data.get("metadata")
        if meta is None:
            meta = {}
        if not isinstance(meta, Mapping):
            raise ScheduleError(f"'metadata' must be a JSON object, got {type(meta).__name__}")
        order = data.get("forecast_order", 1)
        if data["schema_version"] == 1 and "forecast_cells" in meta:
            fc, order, meta = _migrate_forecast_cells(meta, arr, app, fc)
        elif "forecast_cells" in meta:
            raise ScheduleError("schema_version 2 files mark forecast cells with 'f' in 'compute'; remove "
                                "metadata['forecast_cells'] (it is only read, and migrated, in version 1 files)")
        fcs = fc if fc.any() else None
        build = cls.repaired if repair else cls
        return build(arr, space, meta, fcs, order)

    @classmethod
    def load(cls, path: str | Path, *, repair: bool = False) -> Schedule:
        """Read a dit-cache schedule JSON file (ECAD files: use dit_cache.ecad.load_ecad)."""
        path = Path(path)
        data = read_json(path, "schedule file")
        try:
            return cls.from_dict(data, repair=repair)
        except ScheduleError as e:
            raise ScheduleError(f"{path}: {e}") from None


def _check_header(data: Any) -> None:
    """Raise a ScheduleError unless `data` has a dit-cache schedule header this version reads."""
    from .adapters import families, get_adapter

    if not isinstance(data, Mapping):
        raise ScheduleError(f"a schedule must be a JSON object, got {type(data).__name__}")
    if "cache_schedule" in data:
        raise ScheduleError("this is an ECAD schedule file: load it with dit_cache.ecad.load_ecad(path)")
    if data.get("format") != FORMAT:
        raise ScheduleError(f"not a dit-cache schedule (missing \"format\": {FORMAT!r})")
    version = data.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise ScheduleError(f"unsupported schema_version {version!r}; this dit-cache reads versions "
                            f"{', '.join(map(str, READABLE_VERSIONS))}: upgrade dit-cache to read newer files")
    for key in ("family", "steps", "block_ids", "components", "compute"):
        if key not in data:
            raise ScheduleError(f"schedule is missing the key {key!r}")
    if data["family"] not in families():
        raise ScheduleError(f"unknown model family {data['family']!r}; known families: {', '.join(families())}")
    for key in ("block_ids", "components"):
        if not isinstance(data[key], list) or not all(isinstance(x, (str, int)) for x in data[key]):
            raise ScheduleError(f"'{key}' must be a list of names")
    if not isinstance(data["compute"], list) or data["steps"] != len(data["compute"]):
        n = len(data["compute"]) if isinstance(data["compute"], list) else "no list of"
        raise ScheduleError(f"'steps' says {data['steps']!r} but 'compute' has {n} steps")
    known = get_adapter(data["family"]).components
    unknown = [c for c in data["components"] if c not in known]
    if unknown:
        raise ScheduleError(f"unknown components {unknown} for family {data['family']!r}; expected {list(known)}")
    if version == 2 and "forecast_order" not in data:
        raise ScheduleError("schema_version 2 schedules must say 'forecast_order' (the Taylor order of 'f' cells)")


def _parse_cells(rows: list, block_ids: list, comps: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(compute, forecast, applicable) arrays from the 'compute' rows of a schedule file."""
    arr = np.zeros((len(rows), len(block_ids), len(comps)), dtype=bool)
    fc = np.zeros_like(arr)
    app = np.ones((len(block_ids), len(comps)), dtype=bool)
    for s, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(block_ids):
            raise ScheduleError(f"step {s} has {len(row) if isinstance(row, list) else '?'} blocks, expected {len(block_ids)}")
        for b, cells in enumerate(row):
            if not isinstance(cells, str) or len(cells) != len(comps) or set(cells) - set("10f-"):
                raise ScheduleError(
                    f"step {s} block {block_ids[b]}: expected {len(comps)} characters of '1', '0', 'f' or '-', "
                    f"got {cells!r}"
                )
            for c, ch in enumerate(cells):
                arr[s, b, c] = ch not in "0f"
                fc[s, b, c] = ch == "f"
                na = ch == "-"
                if s == 0:
                    app[b, c] = not na
                elif na == app[b, c]:
                    raise ScheduleError(f"step {s} block {block_ids[b]}: '-' cells must be the same on every step")
    return arr, fc, app


def _migrate_forecast_cells(meta: Mapping[str, Any], compute: np.ndarray, app: np.ndarray,
                            fc: np.ndarray) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Forecast mask, order and metadata of a v1 front file of the old `--forecast` search.

    Those files kept forecast cells as one '0'/'1' string per block per step in
    ``metadata["forecast_cells"]`` and the order in ``metadata["forecast_order"]``; the search ran them
    with per-cell Taylor factors of that order, which is what 'f' cells of that order compute.
    """
    fix = "re-run the search with this dit-cache (it writes 'f' cells), or delete metadata['forecast_cells'] to run the cells as reuse"
    cells, order = meta["forecast_cells"], meta.get("forecast_order", 1)
    shape = compute.shape
    ok = isinstance(cells, list) and len(cells) == shape[0] and all(
        isinstance(r, list) and len(r) == shape[1] and all(isinstance(x, str) and len(x) == shape[2] and not set(x) - set("01")
                                                           for x in r) for r in cells)
    if not ok:
        raise ScheduleError(f"metadata['forecast_cells'] does not match the schedule's {shape[0]} steps x {shape[1]} "
                            f"blocks x {shape[2]} components of '0'/'1': {fix}")
    mask = np.array([[[ch == "1" for ch in blk] for blk in step] for step in cells], dtype=bool)
    if fc.any():
        raise ScheduleError(f"the schedule has both 'f' cells and metadata['forecast_cells']: {fix}")
    if (mask & (compute | ~app)).any():
        raise ScheduleError(f"metadata['forecast_cells'] marks computed cells or components a block lacks: {fix}")
    if isinstance(order, bool) or not isinstance(order, int) or order < 0:
        raise ScheduleError(f"metadata['forecast_order'] must be an integer >= 0, got {order!r}: {fix}")
    rest = {k: v for k, v in meta.items() if k not in ("forecast_cells", "forecast_order")}
    return mask, order, {**rest, "migrated": "schema 1 metadata['forecast_cells'] -> 'f' cells"}


def _run_density(compute: np.ndarray) -> np.ndarray:
    """Float [steps, blocks, components]: 1 / (length of the run from the cell's last computed step to its next)."""
    n = compute.shape[0]
    idx = np.arange(n)[:, None, None]
    prev = np.maximum.accumulate(np.where(compute, idx, -1), axis=0)  # last computed step <= i (step 0 computes)
    nxt = np.minimum.accumulate(np.where(compute, idx, n)[::-1], axis=0)[::-1]  # first computed step >= i
    after = np.concatenate([nxt[1:], np.full((1, *compute.shape[1:]), n)])  # first computed step > i
    end = np.where(compute, after, nxt)
    return 1.0 / (end - np.maximum(prev, 0))


def _overlap(src: int, dst: int) -> np.ndarray:
    """[dst, src]: the fraction of new step j's normalised interval [j/dst, (j+1)/dst) that old step i covers."""
    j = np.arange(dst)[:, None]
    i = np.arange(src)[None, :]
    lo = np.maximum(j / dst, i / src)
    hi = np.minimum((j + 1) / dst, (i + 1) / src)
    return np.clip(hi - lo, 0.0, None) * dst


def read_json(path: str | Path, what: str = "file", error: type[Exception] = ScheduleError) -> Any:
    """Parsed JSON of `path`, or one `error` naming the file and what is wrong (missing, a folder, unreadable,
    not text, not JSON, nested too deeply); never a raw traceback."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a folder, not a JSON file")
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not a text (UTF-8 JSON) file") from None
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON: {e}") from None
    except RecursionError:
        raise error(f"{path} is nested too deeply to be a {what}") from None


def _cells(space: ScheduleSpace, mask: np.ndarray) -> str:
    """Human list of (block, component) cells where mask [blocks, components] is True."""
    cells = [f"block {space.block_ids[b]} {space.components[c]}" for b, c in zip(*np.nonzero(mask))]
    return ", ".join(cells[:12]) + (f" and {len(cells) - 12} more" if len(cells) > 12 else "")


# -- generators ----------------------------------------------------------------------------------
def _base(space: ScheduleSpace, steps: int) -> np.ndarray:
    if steps < 1:
        raise ScheduleError(f"steps must be >= 1, got {steps}")
    return np.ones((steps, *space.shape), dtype=bool)


def compute_all(space: ScheduleSpace, steps: int) -> Schedule:
    """Compute every component on every step (no caching; bit-identical to the plain model)."""
    return Schedule(_base(space, steps), space, {"name": "compute-all", "generator": {"kind": "compute_all"}})


def fora(space: ScheduleSpace, steps: int, interval: int, warmup: int = 0) -> Schedule:
    """FORA: compute everything on steps i < warmup or (i - warmup) % interval == 0, reuse otherwise."""
    if interval < 1 or warmup < 0:
        raise ScheduleError(f"FORA needs interval >= 1 and warmup >= 0, got interval={interval}, warmup={warmup}")
    arr = _base(space, steps)
    for i in range(steps):
        if i >= warmup and (i - warmup) % interval:
            arr[i] = ~space.applicable  # reuse every component the block has
    name = f"fora-{interval}" + (f"-w{warmup}" if warmup else "")
    return Schedule(arr, space, {"name": name, "generator": {"kind": "fora", "interval": interval, "warmup": warmup}})


def cache_component(space: ScheduleSpace, steps: int, component: str, interval: int) -> Schedule:
    """Compute `component` only every `interval` steps (from step 0); everything else always."""
    if component not in space.components:
        raise ScheduleError(f"unknown component {component!r}; this model has {list(space.components)}")
    if interval < 1:
        raise ScheduleError(f"interval must be >= 1, got {interval}")
    arr = _base(space, steps)
    c = space.components.index(component)
    for i in range(steps):
        if i % interval:
            arr[i, :, c] = ~space.applicable[:, c]
    meta = {"name": f"cache-{component}-{interval}", "generator": {"kind": "cache_component", "component": component, "interval": interval}}
    return Schedule(arr, space, meta)


def random_schedule(space: ScheduleSpace, steps: int, p: float, seed: int = 0) -> Schedule:
    """Each applicable cell after step 0 reuses with probability `p` (numpy Generator seeded with `seed`)."""
    if not 0.0 <= p <= 1.0:
        raise ScheduleError(f"p must be in [0, 1], got {p}")
    rng = np.random.default_rng(seed)
    arr = rng.random((steps, *space.shape)) >= p
    arr[0] = True
    arr[:, ~space.applicable] = True
    meta = {"name": f"random-p{p:g}-s{seed}", "generator": {"kind": "random", "p": p, "seed": seed}}
    return Schedule(arr, space, meta)
