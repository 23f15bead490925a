"""Exact prefix sharing: candidates that agree on steps 0..k resume from the stored state after step k.

A state after step k of a schedule S depends only on S[0..k] when every computed component output is
kept (the last computed output of each cell): the evaluator runs `StaticScheduleBackend(keep_all=True)`,
which stores every output instead of only those the next step reuses. The values a reused cell
returns are the same tensors a plain `StaticScheduleBackend` returns, hence results are bit-identical
to naive evaluation (tested).

States live in an LRU `StateCache` under a memory budget that counts each tensor storage once
(states share most cached tensors with their parent). With a spill folder, evicted states go to disk
instead of being dropped (tensors as safetensors, the small Python skeleton kept in memory; no pickle)
and come back when a candidate needs them, under their own disk budget.
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils._pytree import tree_leaves

from dit_cache.schedule import Schedule

from .loops import LoopState


def prefix_keys(schedule: Schedule | np.ndarray) -> list[str]:
    """keys[k] identifies schedule rows 0..k (chained hash): equal keys = equal prefixes."""
    if isinstance(schedule, Schedule):
        compute = schedule.compute if schedule.forecast is None else schedule.cells
    else:
        compute = np.asarray(schedule)
    mixed = compute.dtype != bool  # int8: 0 reuse, 1 compute, 2 forecast
    keys, h = [], hashlib.sha256(repr(compute.shape).encode())
    for row in compute:
        h.update(row.astype(np.int8).tobytes() if mixed else np.packbits(row).tobytes())
        keys.append(h.copy().hexdigest()[:24])
    return keys


def _tensors(state: LoopState) -> list[torch.Tensor]:
    leaves = [state.latents, *tree_leaves(getattr(state.scheduler, "model_outputs", []))]
    if state.cache is not None:
        leaves += tree_leaves(state.cache["backend"])
    return [t for t in leaves if isinstance(t, torch.Tensor)]


class _Slot:
    """Placeholder for the i-th tensor of a spilled state."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i


class _Spilled:
    """A state on disk: its tensors in a safetensors file, the rest (a deep copy with placeholders) in memory."""

    def __init__(self, state: LoopState, path: Path) -> None:
        tensors = list({id(t): t for t in [*_tensors(state), *state.generator_states]}.values())
        slots = [_Slot(i) for i in range(len(tensors))]
        self.skeleton = copy.deepcopy(state, {id(t): sl for t, sl in zip(tensors, slots)})
        self.slots, self.path = slots, path
        save_file({f"t{i}": t.detach().contiguous().clone() for i, t in enumerate(tensors)}, str(path))
        self.nbytes = path.stat().st_size

    def load(self) -> LoopState:
        """The state back in memory (bit-identical tensors)."""
        data = load_file(str(self.path))
        return copy.deepcopy(self.skeleton, {id(sl): data[f"t{sl.i}"] for sl in self.slots})


class StateCache:
    """LRU map (batch, prefix key) -> LoopState, bounded by `budget_bytes` of distinct tensor storage.

    Pinned keys (the prefixes of the current population, i.e. of the next parents) are evicted only
    after every unpinned state is gone. With `spill_dir`, evicted states are written there (up to
    `spill_bytes` on disk, oldest deleted first) and reloaded when needed.
    """

    def __init__(self, budget_bytes: int, spill_dir: str | Path | None = None, spill_bytes: int = 0) -> None:
        self.budget = int(budget_bytes)
        self.spill_dir = Path(spill_dir) if spill_dir is not None and spill_bytes > 0 else None
        self.spill_budget = int(spill_bytes)
        self.disk: OrderedDict[tuple[int, str], _Spilled] = OrderedDict()
        self.disk_bytes = 0
        self.spills = self.loads = 0
        if self.spill_dir is not None:
            self.spill_dir.mkdir(parents=True, exist_ok=True)
        self.pinned: set[tuple[int, str]] = set()
        self.states: OrderedDict[tuple[int, str], tuple[LoopState, list[int]]] = OrderedDict()
        self._refs: dict[int, list[int]] = {}  # storage ptr -> [bytes, refcount]
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    def _add(self, ptrs: list[int], sizes: list[int]) -> None:
        for p, n in zip(ptrs, sizes):
            ref = self._refs.get(p)
            if ref is None:
                self._refs[p] = [n, 1]
                self.bytes += n
            else:
                ref[1] += 1

    def _drop(self, ptrs: list[int]) -> None:
        for p in ptrs:
            ref = self._refs[p]
            ref[1] -= 1
            if ref[1] == 0:
                self.bytes -= ref[0]
                del self._refs[p]

    def put(self, key: tuple[int, str], state: LoopState) -> None:
        """Store a state (most recently used); evict least recently used ones over the budget."""
        if key in self.states or self.budget <= 0:
            return
        uniq = {}
        for t in _tensors(state):
            s = t.untyped_storage()
            uniq[s.data_ptr()] = s.nbytes()
        ptrs = list(uniq)
        self._add(ptrs, list(uniq.values()))
        self.states[key] = (state, ptrs)
        while self.bytes > self.budget and len(self.states) > 1:
            victim = next((k for k in self.states if k not in self.pinned and k != key), None)
            if victim is None:
                victim = next(iter(self.states))
            vstate, old = self.states.pop(victim)
            self._drop(old)
            self.evictions += 1
            self._spill(victim, vstate)

    def _spill(self, key: tuple[int, str], state: LoopState) -> None:
        """Write an evicted state to disk (if spilling is on), deleting the oldest files over the disk budget."""
        if self.spill_dir is None or key in self.disk:
            return
        item = _Spilled(state, self.spill_dir / f"b{key[0]}_{key[1]}.safetensors")
        self.disk[key] = item
        self.disk_bytes += item.nbytes
        self.spills += 1
        while self.disk_bytes > self.spill_budget and self.disk:
            _, gone = self.disk.popitem(last=False)
            self.disk_bytes -= gone.nbytes
            gone.path.unlink(missing_ok=True)

    def pin(self, keys: set[tuple[int, str]]) -> None:
        """Protect these states from eviction while unpinned ones remain (replaces earlier pins)."""
        self.pinned = set(keys)

    def get(self, key: tuple[int, str]) -> LoopState | None:
        """The state for `key` (marked most recently used) or None."""
        item = self.states.get(key)
        if item is None:
            self.misses += 1
            return None
        self.hits += 1
        self.states.move_to_end(key)
        return item[0]

    def longest(self, batch: int, keys: list[str], upto: int) -> LoopState | None:
        """The stored state with the longest prefix keys[:k+1], k < upto (None if none)."""
        for k in range(upto - 1, -1, -1):
            key = (batch, keys[k])
            if key in self.states:
                return self.get(key)
            if key in self.disk:
                self.disk.move_to_end(key)
                state = self.disk[key].load()
                self.loads += 1
                self.hits += 1
                self.put(key, state)
                return state
        return None

    def clear(self) -> None:
        """Forget every state."""
        self.states.clear()
        self._refs.clear()
        self.bytes = 0
        for item in self.disk.values():
            item.path.unlink(missing_ok=True)
        self.disk.clear()
        self.disk_bytes = 0
