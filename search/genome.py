"""Genome of a caching schedule, heuristic seeds, and the variation operators of the search.

The genome is the schedule's compute array [steps, blocks, components] (True = compute); step 0 and
cells a block does not have are fixed to compute and never evolve. Operators (ECAD-style):

* k-point crossover along the step axis: cut points c_1 < .. < c_k in 1..S-1; children swap every
  other segment of whole step rows;
* bit-flip mutation: each evolvable cell flips with probability ``indpb`` (default 2 / #cells).

Optional ``late_bias`` β ≥ 0 (default 0 = uniform, as ECAD): step i is picked as a cut point, and its
cells flip, with weight w_i ∝ (i / S)^β (mean flips per child unchanged). β > 0 concentrates variation
on late steps, so children keep longer prefixes of their parents and exact prefix sharing saves more.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

import dit_cache as dc
from dit_cache.schedule import Schedule, ScheduleSpace


def evolvable(space: ScheduleSpace, steps: int) -> np.ndarray:
    """Bool mask [steps, blocks, components] of cells the search may change."""
    mask = np.broadcast_to(space.applicable, (steps, *space.shape)).copy()
    mask[0] = False
    return mask


def to_schedule(compute: np.ndarray, space: ScheduleSpace, **metadata: object) -> Schedule:
    """A Schedule from a genome array."""
    return Schedule(compute, space, metadata)


def encode(compute: np.ndarray) -> str:
    """Compact text form of a genome for checkpoints: hex of packed bits; mixed (int8) genomes get
    'm:' + two bit planes (compute, forecast)."""
    if compute.dtype == bool:
        return np.packbits(compute.ravel()).tobytes().hex()
    planes = np.concatenate([(compute == 1).ravel(), (compute == 2).ravel()])
    return "m:" + np.packbits(planes).tobytes().hex()


def decode(text: str, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of `encode`."""
    n = int(np.prod(shape))
    if text.startswith("m:"):
        bits = np.unpackbits(np.frombuffer(bytes.fromhex(text[2:]), dtype=np.uint8))[: 2 * n]
        g = bits[:n].astype(np.int8) + 2 * bits[n:].astype(np.int8)
        return g.reshape(shape)
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:n]
    return bits.astype(bool).reshape(shape)


def as_mixed(compute: np.ndarray, forecast: bool = False) -> np.ndarray:
    """int8 genome from a bool one: reuse cells become forecast cells when `forecast`."""
    return np.where(compute, 1, 2 if forecast else 0).astype(np.int8)


def delta_dit(space: ScheduleSpace, steps: int, interval: int = 2, boundary: float = 0.5) -> Schedule:
    """Δ-DiT-like: before the boundary step reuse the rear half of the blocks, after it the front half;
    every `interval`-th step computes everything (arXiv 2406.01125)."""
    arr = np.ones((steps, *space.shape), dtype=bool)
    nb = space.shape[0]
    b = round(boundary * steps)
    for i in range(1, steps):
        if i % interval == 0:
            continue
        blocks = slice(nb // 2, nb) if i < b else slice(0, nb // 2)
        arr[i, blocks] = ~space.applicable[blocks]
    return Schedule(arr, space, {"name": f"delta-dit-{interval}", "generator": {"kind": "delta_dit", "interval": interval}})


def two_phase(space: ScheduleSpace, steps: int, early: int, late: int, switch: int) -> Schedule:
    """FORA with interval `early` before step `switch` and `late` from it on (a full step at `switch`)."""
    arr = np.ones((steps, *space.shape), dtype=bool)
    for i in range(1, steps):
        if (i < switch and i % early) or (i >= switch and (i - switch) % late):
            arr[i] = ~space.applicable
    return Schedule(arr, space, {"name": f"fora-{early}to{late}@{switch}",
                                 "generator": {"kind": "two_phase", "early": early, "late": late, "switch": switch}})


def step_probe(space: ScheduleSpace, steps: int, step: int) -> Schedule:
    """Compute everything except step `step`, where every cell reuses (one probe of the step profile)."""
    arr = dc.compute_all(space, steps).compute.copy()
    arr[step] &= ~evolvable(space, steps)[step]
    return Schedule(arr, space, {"name": f"probe-step-{step}"})


def profiled_seeds(space: ScheduleSpace, steps: int, errors: dict[int, float]) -> list[Schedule]:
    """For k = 1, 2, ..: reuse k steps picked greedily by lowest probe error (reusing that step alone), with
    runs of consecutive reuse steps no longer than the shortest run length m that admits k steps.

    ERTACache's offline step selection (arXiv 2508.21091, step (1), with its cap on consecutive reuse)
    turned into seeds: the probes share compute-all's prefixes, and the search refines per block and
    component. Without the cap the k best steps cluster (e.g. 12..17) and their errors compound.
    """
    order = sorted(errors, key=lambda i: (errors[i], i))
    mask = evolvable(space, steps)
    out, seen = [], set()
    for k in range(1, len(order)):
        for m in range(1, len(order) + 1):
            chosen: set[int] = set()
            for i in order:
                if len(chosen) == k:
                    break
                lo, hi = i, i
                while lo - 1 in chosen:
                    lo -= 1
                while hi + 1 in chosen:
                    hi += 1
                if hi - lo + 1 <= m:
                    chosen.add(i)
            if len(chosen) == k:
                break
        key = tuple(sorted(chosen))
        if len(chosen) < k or key in seen:
            continue
        seen.add(key)
        arr = dc.compute_all(space, steps).compute.copy()
        idx = list(key)
        arr[idx] &= ~mask[idx]
        out.append(Schedule(arr, space, {"name": f"profiled-{k}"}))
    return out


def heuristic_seeds(space: ScheduleSpace, steps: int, profile: dict[int, float] | None = None) -> list[Schedule]:
    """Initial population seeds: compute-all, FORA N=2..6, the profiled seeds of `profile` (step -> probe
    error, see `profiled_seeds`), Δ-DiT-like, per-component evenly spaced caching, then FORA with 2 or 4
    warm-up steps and two-phase FORA (denser before a switch step, sparser after, or the reverse), in that
    order (a small population keeps the first ones)."""
    seeds = [dc.compute_all(space, steps)]
    seeds += [dc.fora(space, steps, n) for n in range(2, 7) if n < steps]
    seeds += profiled_seeds(space, steps, profile) if profile else []
    seeds += [delta_dit(space, steps, 2), delta_dit(space, steps, 3)]
    for n in (2, 3, 4):
        seeds += [dc.cache_component(space, steps, c, n) for c in space.components if n < steps]
    seeds += [dc.fora(space, steps, n, w) for n in (3, 4) for w in (2, 4) if n + w < steps]
    for switch in (steps // 3, steps // 2):
        seeds += [two_phase(space, steps, a, b, switch) for a, b in ((2, 4), (2, 5), (3, 5), (4, 2), (5, 3))
                  if 1 < switch < steps - max(a, b)]
    seen, out = set(), []
    for s in seeds:
        if s.digest() not in seen:
            seen.add(s.digest())
            out.append(s)
    return out


@dataclass(frozen=True)
class Operators:
    """Variation settings: crossover probability and points, per-cell flip probability (None = 2 / #cells)."""

    cxpb: float = 0.9
    cx_points: int = 4
    mutpb: float = 1.0
    indpb: float | None = None
    late_bias: float = 0.0

    def validate(self) -> None:
        """Raise ValueError on rates outside [0, 1]."""
        for name in ("cxpb", "mutpb"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.indpb is not None and not 0.0 < self.indpb <= 1.0:
            raise ValueError(f"indpb must be in (0, 1], got {self.indpb}")
        if self.late_bias < 0:
            raise ValueError(f"late_bias must be >= 0, got {self.late_bias}")
        if self.cx_points < 1:
            raise ValueError(f"cx_points must be >= 1, got {self.cx_points}")


def random_genome(rng: random.Random, mask: np.ndarray, mixed: bool = False) -> np.ndarray:
    """Every evolvable cell reuses with a probability drawn uniformly in [0.2, 0.8] (mixed genomes: each
    such cell then forecasts instead with probability 1/2)."""
    p = rng.uniform(0.2, 0.8)
    arr = np.ones(mask.shape, dtype=bool)
    idx = np.flatnonzero(mask)
    flips = np.array([rng.random() < p for _ in range(idx.size)], dtype=bool)
    arr.ravel()[idx[flips]] = False
    if not mixed:
        return arr
    g = arr.astype(np.int8)
    for j in idx[flips]:
        if rng.random() < 0.5:
            g.ravel()[j] = 2
    return g


def step_weights(steps: int, late_bias: float) -> np.ndarray:
    """Relative weight of each step for variation, mean 1 over steps 1..S-1 (w_0 = 0)."""
    w = (np.arange(steps) / steps) ** late_bias if late_bias > 0 else np.ones(steps)
    w[0] = 0.0
    return w / w[1:].mean()


def _weighted_sample(rng: random.Random, weights: np.ndarray, k: int) -> list[int]:
    """k distinct indices drawn without replacement with the given weights."""
    w, out = [float(x) for x in weights], []
    for _ in range(k):
        r, acc, pick = rng.random() * sum(w), 0.0, max(range(len(w)), key=w.__getitem__)
        for j, x in enumerate(w):
            acc += x
            if x > 0 and r < acc:
                pick = j
                break
        out.append(pick)
        w[pick] = 0.0
    return out


def crossover(rng: random.Random, a: np.ndarray, b: np.ndarray, points: int,
              late_bias: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """k-point crossover of whole step rows (cut points in 1..S-1)."""
    steps = a.shape[0]
    k = min(points, steps - 1)
    if k < 1:
        return a.copy(), b.copy()
    if late_bias > 0:
        picked = _weighted_sample(rng, step_weights(steps, late_bias), k)
    else:
        picked = rng.sample(range(1, steps), k)
    cuts = [*sorted(picked), steps]
    c1, c2 = a.copy(), b.copy()
    swap, start = False, 0
    for cut in cuts:
        if swap:
            c1[start:cut], c2[start:cut] = b[start:cut], a[start:cut]
        swap, start = not swap, cut
    return c1, c2


def mutate(rng: random.Random, g: np.ndarray, mask: np.ndarray, indpb: float | None,
           late_bias: float = 0.0) -> np.ndarray:
    """Bit-flip mutation of the evolvable cells."""
    idx = np.flatnonzero(mask)
    p = indpb if indpb is not None else min(1.0, 2.0 / max(1, idx.size))
    cell = mask[0].size
    pw = np.minimum(1.0, p * step_weights(mask.shape[0], late_bias)) if late_bias > 0 else None
    out = g.copy()
    flat = out.ravel()
    mixed = out.dtype != bool
    for j in idx:
        if rng.random() < (p if pw is None else pw[j // cell]):
            if mixed:  # move to one of the two other states
                flat[j] = (int(flat[j]) + 1 + (rng.random() < 0.5)) % 3
            else:
                flat[j] = not flat[j]
    return out
