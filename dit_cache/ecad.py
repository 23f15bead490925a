"""Import and export of ECAD schedule files (arXiv 2506.15682, PixArt-α/Σ and FLUX.1).

ECAD layout: ``{"cache_schedule": {"num_blocks", "num_inference_steps", "name", "attributes",
"schedule": {"000": {"0": {"attn1": true, ...}, ...}, ...}}, "config": {...}, "metrics": {...}}``,
True = recompute. FLUX block keys are "0".."18" (double) and "single_0".."single_37" (single).

Real-data quirk: published ECAD schedules flag some components as reused on step 0, when nothing is
cached yet (e.g. block 17 attn1 in ``ours_fast.json``); ECAD's runtime silently computes them. The
importer does the same and warns once, naming the cells.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .adapters import get_adapter
from .schedule import Schedule, ScheduleError, ScheduleSpace, read_json

_ECAD_FAMILIES = ("pixart", "flux")


def _block_key(block_id: str) -> tuple[int, int]:
    m = re.fullmatch(r"(single_)?(\d+)", block_id)
    if not m:
        raise ScheduleError(f"unexpected ECAD block key {block_id!r} (expected '12' or 'single_3')")
    return (1 if m.group(1) else 0, int(m.group(2)))


def _infer_family(components: set[str]) -> str:
    for family in _ECAD_FAMILIES:
        if components <= set(get_adapter(family).components):
            return family
    raise ScheduleError(f"cannot tell the model family from ECAD components {sorted(components)}")


def _ecad_steps(data: Any) -> tuple[Mapping[str, Any], Mapping[str, Any], list[str]]:
    """(cache_schedule, schedule table, step keys in order) of an ECAD document, checked."""
    cs = data.get("cache_schedule") if isinstance(data, Mapping) else None
    steps_map = cs.get("schedule") if isinstance(cs, Mapping) else None
    if not isinstance(steps_map, Mapping) or not steps_map:
        raise ScheduleError("not an ECAD schedule: expected {\"cache_schedule\": {\"schedule\": {\"000\": ...}}}")
    bad = [k for k in steps_map if not (isinstance(k, str) and k.isdigit())]
    if bad:
        raise ScheduleError(f"ECAD step keys must be numbers like '000', got {bad[:3]}")
    step_keys = sorted(steps_map, key=int)
    if [int(k) for k in step_keys] != list(range(len(step_keys))):
        raise ScheduleError(f"ECAD steps must be 000..{len(step_keys) - 1:03d}, got {step_keys[:3]}...")
    n_steps = cs.get("num_inference_steps", len(step_keys))
    if n_steps != len(step_keys):
        raise ScheduleError(f"num_inference_steps is {n_steps} but the schedule has {len(step_keys)} steps")
    for key in step_keys:
        step = steps_map[key]
        if not isinstance(step, Mapping) or not all(isinstance(v, Mapping) for v in step.values()):
            raise ScheduleError(f"ECAD step {key}: expected {{block: {{component: true/false}}}}")
    return cs, steps_map, step_keys


def _check_block_counts(cs: Mapping[str, Any], block_ids: list[str]) -> None:
    """num_blocks (double/joint blocks) and num_single_blocks (FLUX) agree with the table's blocks."""
    single = sum(b.startswith("single_") for b in block_ids)
    if "num_single_blocks" in cs:  # ECAD's FLUX files: "num_blocks": 19, "num_single_blocks": 38
        counts = {"num_blocks": len(block_ids) - single, "num_single_blocks": single}
    else:
        counts = {"num_blocks": len(block_ids)}
    for key, n in counts.items():
        if cs.get(key, n) != n:
            raise ScheduleError(f"{key} is {cs[key]} but step 000 has {n} {'single ' if 'single' in key else ''}blocks")


def from_ecad(data: Mapping[str, Any], *, family: str | None = None, source: str | None = None) -> Schedule:
    """Schedule from a parsed ECAD JSON document (step-0 reuse flags are computed, with a warning)."""
    cs, steps_map, step_keys = _ecad_steps(data)
    block_ids = sorted(steps_map[step_keys[0]], key=_block_key)
    _check_block_counts(cs, block_ids)
    used = {c for step in steps_map.values() for blk in step.values() for c in blk}
    family = family or _infer_family(used)
    components = get_adapter(family).components
    unknown = used - set(components)
    if unknown:
        raise ScheduleError(f"unknown components {sorted(unknown)} for family {family!r}; expected {list(components)}")
    first = steps_map[step_keys[0]]
    applicable = np.array([[c in first[b] for c in components] for b in block_ids])
    arr = np.ones((len(step_keys), len(block_ids), len(components)), dtype=bool)
    for s, key in enumerate(step_keys):
        step = steps_map[key]
        if sorted(step, key=_block_key) != block_ids:
            raise ScheduleError(f"ECAD step {key} has different blocks than step 000")
        for b, bid in enumerate(block_ids):
            if set(step[bid]) != set(first[bid]):
                raise ScheduleError(f"ECAD step {key} block {bid} has components {sorted(step[bid])} but step 000 has "
                                    f"{sorted(first[bid])}: every step must flag the same components")
            for comp, flag in step[bid].items():
                if not isinstance(flag, bool):
                    raise ScheduleError(f"ECAD step {key} block {bid} {comp}: expected true/false, got {flag!r}")
                arr[s, b, components.index(comp)] = flag
    space = ScheduleSpace(family, tuple(block_ids), components, applicable)
    metrics = data.get("metrics") if isinstance(data.get("metrics"), Mapping) else {}
    attributes = cs.get("attributes") if isinstance(cs.get("attributes"), Mapping) else {}
    meta: dict[str, Any] = {"name": str(cs.get("name", "ecad")),
                            "provenance": {"format": "ecad", "source": source, "attributes": attributes}}
    if "total_macs" in metrics:
        meta["ecad_metrics"] = {k: metrics[k] for k in ("total_macs", "total_flops", "latency") if k in metrics}
    return Schedule.repaired(arr, space, meta)


def load_ecad(path: str | Path, *, family: str | None = None) -> Schedule:
    """Read an ECAD schedule JSON file."""
    path = Path(path)
    return from_ecad(read_json(path, "ECAD schedule file"), family=family, source=str(path))


def to_ecad(schedule: Schedule, *, per_step_macs: list[int] | None = None) -> dict[str, Any]:
    """ECAD JSON document for a PixArt or FLUX schedule (optionally with per-step MACs as metrics)."""
    if schedule.family not in _ECAD_FAMILIES:
        raise ScheduleError(f"ECAD files describe {_ECAD_FAMILIES} models, not {schedule.family!r}")
    space, arr = schedule.space, schedule.compute
    table = {
        f"{s:03d}": {
            bid: {c: bool(arr[s, b, ci]) for ci, c in enumerate(space.components) if space.applicable[b, ci]}
            for b, bid in enumerate(space.block_ids)
        }
        for s in range(schedule.steps)
    }
    reused = ~arr & space.applicable
    prov = schedule.metadata.get("provenance") or {}
    attributes = prov.get("attributes") if prov.get("format") == "ecad" else None
    if attributes is None:
        attributes = {
            "num_affected_steps": int(reused.any((1, 2)).sum()),
            "num_affected_blocks": int(reused.any((0, 2)).sum()),
            "total_num_affected_blocks": int(reused.any(2).sum()),
        }
    single = sum(b.startswith("single_") for b in space.block_ids)
    counts = {"num_blocks": len(space.block_ids) - single, "num_single_blocks": single} if single else \
        {"num_blocks": len(space.block_ids)}  # ECAD's FLUX files count double and single blocks apart
    doc: dict[str, Any] = {
        "cache_schedule": {
            **counts,
            "num_inference_steps": schedule.steps,
            "name": schedule.name,
            "attributes": attributes,
            "schedule": table,
        },
        "config": {},
    }
    if per_step_macs is not None:
        doc["metrics"] = {
            "by_inference_step": {f"{s:03d}": {"macs": int(m)} for s, m in enumerate(per_step_macs)},
            "total_macs": int(sum(per_step_macs)),
        }
    return doc


def save_ecad(schedule: Schedule, path: str | Path, **kwargs: Any) -> Path:
    """Write `schedule` as an ECAD JSON file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_ecad(schedule, **kwargs), indent=4) + "\n")
    return path


def load_schedule_file(path: str | Path, *, repair: bool = False) -> Schedule:
    """Read a dit-cache schedule or an ECAD schedule file, whichever `path` holds."""
    path = Path(path)
    data = read_json(path, "schedule file")
    if isinstance(data, Mapping) and "cache_schedule" in data:
        return from_ecad(data, source=str(path))
    try:
        return Schedule.from_dict(data, repair=repair)
    except ScheduleError as e:
        raise ScheduleError(f"{path}: {e}") from None
