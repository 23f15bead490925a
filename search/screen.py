"""Surrogate pre-screening of children (``--screen-keep F``): breed more children than are evaluated and
generate only those a cheap model of the schedules already evaluated predicts can improve the front.

Surrogate (ridge regression on the archive: every fully evaluated schedule), per evolvable cell c = (step i,
block b, component k) with r_c = 1 when the cell is not computed (reuse; a forecast cell has its own
indicator f_c) and r_c⁻ the same cell at step i−1:

    q̂(g) = w₀ + Σ_c (a_c r_c + b_c f_c + v_c r_c r_c⁻) + Σ_i (α_i r̄_i + β_i (r r⁻)‾_i)
                                         # consecutive reuse compounds error; r̄_i = mean of r over step i
    w = argmin ‖X w − q‖² + λ ‖w‖²,   λ = 1e-3 · tr(XᵀX) / #features

Per generation ``--screen-pool P`` × population children are bred with the usual operators; children already
in the fitness cache are free and always kept. Each new child c is scored against the archive front F:

    s(c) = q̂(c) − min{ q(p) : p ∈ F, macs(p) ≤ macs(c) }             # (−∞ where no p is that cheap)

and only k = ⌈F · population⌉ are generated (evaluated exactly, on every prompt): the ⌈k/2⌉ lowest scores and
k − ⌈k/2⌉ drawn uniformly from the rest (in a first single-seed run on the embedded model, ranking alone raised the
hypervolume fastest for 10 generations, then flattened below the defaults').

``--screen-generations G`` > 1 breeds the pool over G generations *on the surrogate* (surrogate-assisted NSGA-II):
an inner population starts as the evaluated one (true fitness); each inner generation breeds P populations of
children from it, gives every child its exact MACs and, unless it was evaluated, q̂ as quality, and keeps the
NSGA-II survivors of the union. Every child bred in any inner generation joins the pool scored above. Predicted
fitness lives only on these inner copies: it never reaches the fitness cache. G = 1 is the single breeding above.
A screened-out
child is never evaluated, never enters the fitness cache, the population or the front, so no reported number
is a prediction. Sources: surrogate-assisted evolutionary search (Jin, Swarm Evol. Comput. 2011); the
additive per-cell error model is ECAD's observation that caching errors add up along steps (arXiv 2506.15682).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import genome as G


def features(genomes: list[np.ndarray], mask: np.ndarray) -> np.ndarray:
    """Design matrix [n, 1 + 3·cells + 2·steps]: bias; reuse, forecast and consecutive-reuse indicators per
    cell; per step the fraction of its cells reused and reused twice in a row (coarse terms the ridge penalty
    favours while few schedules are known)."""
    g = np.stack([np.asarray(x, dtype=np.int8) for x in genomes])  # [n, S, B, K]: 0 reuse, 1 compute, 2 forecast
    reuse = g == 0
    prev = np.zeros_like(reuse)
    prev[:, 1:] = reuse[:, :-1]
    cells = mask.ravel()
    flat = [a.reshape(len(g), -1)[:, cells] for a in (reuse, g == 2, reuse & prev)]
    per_step = np.maximum(mask.reshape(mask.shape[0], -1).sum(1), 1)  # [S] evolvable cells per step
    coarse = [(a & mask).reshape(len(g), mask.shape[0], -1).sum(2) / per_step for a in (reuse, reuse & prev)]
    return np.concatenate([np.ones((len(g), 1)), *flat, *coarse], axis=1).astype(np.float64)


class Surrogate:
    """Ridge regression of the quality loss on `features` (fit on the fully evaluated schedules)."""

    def __init__(self, mask: np.ndarray) -> None:
        self.mask = mask
        self.w: np.ndarray | None = None

    def fit(self, genomes: list[np.ndarray], quality: list[float]) -> Surrogate:
        """Fit on (genome, quality loss) pairs."""
        x, y = features(genomes, self.mask), np.asarray(quality, dtype=np.float64)
        xtx = x.T @ x
        lam = 1e-3 * max(float(np.trace(xtx)), 1e-12) / xtx.shape[0]
        self.w = np.linalg.solve(xtx + lam * np.eye(xtx.shape[0]), x.T @ y)
        return self

    def predict(self, genomes: list[np.ndarray]) -> np.ndarray:
        """Predicted quality loss of each genome."""
        assert self.w is not None, "fit() first"
        return features(genomes, self.mask) @ self.w


def front_quality(front: list[tuple[float, float]], cost: float) -> float:
    """Best quality loss on the front among points no dearer than `cost` (inf where none is)."""
    qs = [q for c, q in front if c <= cost]
    return min(qs) if qs else math.inf


def _predicted(search: Any, kids: list[Any], model: Surrogate) -> None:
    """Give inner-loop copies their fitness: (exact MACs fraction, evaluated quality or q̂)."""
    st, new = search.state.fitness, [k for k in kids if k.key not in search.state.fitness]
    pred = dict(zip((k.key for k in new), model.predict([k.genome for k in new]))) if new else {}
    for k in kids:
        f = st.get(k.key)
        q = f["quality"] if f is not None else float(pred[k.key])
        k.fitness.values = (search._cost_ev.macs(k.genome) / search.full_macs, q)


def breed_pool(search: Any, pop: list[Any], model: Surrogate | None) -> dict[str, Any]:
    """Children of `pop` by key: ``--screen-pool`` breedings per inner generation, over ``--screen-generations``
    generations on the surrogate (one generation: no model needed)."""
    cfg, pool, inner = search.cfg, {}, pop
    for g in range(cfg.screen_generations):
        kids = [kid for _ in range(cfg.screen_pool) for kid in search.offspring(inner)]
        for kid in kids:
            pool.setdefault(kid.key, kid)
        if g + 1 < cfg.screen_generations:
            assert model is not None
            copies = [type(i)(i.genome) for i in inner]  # predicted fitness stays on these copies
            _predicted(search, copies + kids, model)
            inner = search.select(copies, kids)
    for kid in pool.values():
        kid.fitness.delValues()  # the evaluation gives the real fitness
    return pool


def screen(search: Any, pop: list[Any]) -> list[Any]:
    """Children of `pop` to evaluate this generation (see the module docstring); counts the rest as screened."""
    cfg, st = search.cfg, search.state
    archive = [f for f in st.fitness.values() if not f.get("partial")]
    model = Surrogate(search.mask).fit([G.decode(f["genome"], search.shape) for f in archive],
                                       [f["quality"] for f in archive])
    pool = breed_pool(search, pop, model if cfg.screen_generations > 1 else None)
    cached = [k for k in pool.values() if k.key in st.fitness]
    new = [k for k in pool.values() if k.key not in st.fitness]
    budget = math.ceil(cfg.screen_keep * cfg.population)
    if len(new) <= budget:
        return cached + new
    front = [tuple(i.fitness.values) for i in search.archive_front()]
    pred = model.predict([k.genome for k in new])
    costs = [search._cost_ev.macs(k.genome) / search.full_macs for k in new]
    score = [p - front_quality(front, c) for p, c in zip(pred, costs)]
    order = sorted(range(len(new)), key=lambda j: (score[j], costs[j]))
    best = math.ceil(budget / 2)
    explore = search.rng.sample(order[best:], budget - best)  # the surrogate alone stalls the front: explore
    st.screened += len(new) - budget
    return cached + [new[j] for j in order[:best] + explore]
