"""Optional multi-fidelity evaluation (``--multi-fidelity``, off by default because it changes results).

Children are generated on the first prompt batch only; the remaining batches are spent only on
children that can still reach the front by the rule in `evaluate_children`. Functions take the
`Search` as their first argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .genome import encode


def evaluate_children(search: Any, todo: list[Any], parents: list[Any], keep: list[np.ndarray] | None) -> None:
    """Multi-fidelity: every child on the first prompt batch; the other batches only for children that
    no fully evaluated parent dominates on that batch by more than the margin (m = --mf-margin):

        skip c  iff  ∃ p: macs_p ≤ macs_c  and  (1 + m) · q_sub(p) < q_sub(c)

    A skipped child is recorded as 'partial' with quality (1 + m) · q(p) + 1e-12 for the best such p, so
    it is strictly dominated by p and never on the front.
    """
    n = search.n_sub
    sub = search.pool.evaluate([i.genome for i in todo], keep, batches=[0])
    ref = [f for f in (search.state.fitness[p.key] for p in parents) if "quality_sub" in f and not f.get("partial")]
    full, m = [], search.cfg.mf_margin
    for ind, lat in zip(todo, sub):
        q_sub = float(search.sub_objective(lat, search.reference[:n])["quality"])
        macs = search._cost_ev.macs(ind.genome)
        doms = [f for f in ref if f["macs"] <= macs and (1 + m) * f["quality_sub"] < q_sub]
        if not doms:
            full.append((ind, lat))
            continue
        best = min(f["quality"] for f in doms)
        search.state.fitness[ind.key] = {"genome": encode(ind.genome), "macs": macs, "partial": True,
                                       "quality": (1 + m) * best + 1e-12, "quality_sub": q_sub, "metrics": {}}
    if full:
        batches = list(range(1, len(search.pool_batches())))
        rest = search.pool.evaluate([i.genome for i, _ in full], keep, batches=batches)
        for (ind, lat0), lat1 in zip(full, rest):
            search._store(ind, torch.cat([lat0, lat1]))

def complete_front(search: Any, pop: list[Any]) -> None:
    """Multi-fidelity: fully evaluate partial members of the final front (repeat until none is left)."""
    while True:
        part = [i for i in search.front(pop) if search.state.fitness[i.key].get("partial")]
        if not part:
            return
        lats = search.pool.evaluate([i.genome for i in part])
        for ind, lat in zip(part, lats):
            search._store(ind, lat)
        search.evaluate(pop, count_hits=False)
