"""Expected prefix-sharing saving of the search's variation operators alone (no model, no selection).

    python benchmarks/prefix_sharing_sim.py

A child evaluated after its parent only re-runs the steps from its first changed row r (the earliest
crossover cut or flipped cell): S - r of S steps. Parents are assumed to share nothing, so this is a
lower bound for a converged population. Counts, not timings; writes benchmarks/results/prefix_sharing_sim.json.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.genome import _weighted_sample, step_weights  # noqa: E402


def saving(steps: int, cells: int, beta: float, cuts: int, cxpb: float = 0.9, n: int = 4000, seed: int = 0) -> float:
    """Naive steps / steps re-run, averaged over n children (indpb = 2 / evolvable cells, as the search)."""
    rng = random.Random(seed)
    w = step_weights(steps, beta)
    p = 2 / ((steps - 1) * cells)
    run = 0
    for _ in range(n):
        r = steps
        if rng.random() < cxpb:
            picks = _weighted_sample(rng, w, cuts) if beta > 0 else rng.sample(range(1, steps), cuts)
            r = min(picks)
        for i in range(1, steps):
            if any(rng.random() < min(1.0, p * w[i]) for _ in range(cells)):
                r = min(r, i)
                break
        run += steps - r
    return steps * n / run


def main() -> None:
    steps, cells = 20, 12 * 3  # the embedded model: 12 blocks x 3 components
    rows = [{"late_bias": b, "cx_points": k, "saving": round(saving(steps, cells, b, k), 3)}
            for b in (0, 4, 6, 8) for k in (1, 2, 4)]
    out = ROOT / "benchmarks" / "results" / "prefix_sharing_sim.json"
    out.write_text(json.dumps({"steps": steps, "cells_per_step": cells, "children": 4000, "rows": rows}, indent=1) + "\n")
    for r in rows:
        print(f"late-bias {r['late_bias']}  cx-points {r['cx_points']}: {r['saving']:.2f}x")


if __name__ == "__main__":
    main()
