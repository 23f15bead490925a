"""Outputs of a search run: front/*.json (loadable schedules with objectives), front.png, history.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import genome as G


def _named_points(search: Any) -> list[tuple[str, float, float]]:
    """(name, MACs fraction, quality) of the heuristic seeds that were evaluated (for the plot)."""
    out = []
    for s in G.heuristic_seeds(search.space, search.cfg.steps):
        if s.name.startswith(("fora", "compute-all", "delta")):
            key = search._ind_key(s.compute)
            f = search.state.fitness.get(key)
            if f is not None:
                out.append((s.name, f["macs"] / search.full_macs, f["quality"]))
    return out


def plot_front(history: list[dict[str, Any]], named: list[tuple[str, float, float]], path: Path,
               objective: str) -> Path:
    """Pareto front per generation (x = MACs speedup, y = quality loss), coloured by generation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .objectives import PSNR_CAP_DB

    psnr = objective in ("psnr", "image-psnr")  # plot the PSNR itself (higher is better), compute-all (exact) left out

    def y_of(q: float) -> float:
        return PSNR_CAP_DB - q if psnr else q

    history = [{**h, "front": [p for p in h["front"] if not (psnr and p[1] == 0)]} for h in history]
    named = [(m, x, y_of(q)) for m, x, q in named if not (psnr and q == 0)]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    cmap = plt.get_cmap("viridis")
    n = max(1, len(history) - 1)
    for h in history:
        pts = sorted(h["front"])
        xs, ys = [1 / p[0] for p in pts], [y_of(p[1]) for p in pts]
        ax.plot(xs, ys, "o-", ms=3, lw=0.8, color=cmap(h["generation"] / n), alpha=0.9)
    for name, x, y in named:
        if (name.startswith("fora-") and "-w" not in name and "to" not in name) or name == "compute-all":
            ax.plot(1 / x, y, "kx", ms=6)
            ax.annotate(name, (1 / x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    pos = [p[1] for h in history for p in h["front"] if p[1] > 0]
    if pos and max(pos) / min(pos) > 100 and not psnr:  # errors span decades: symmetric log keeps the zero of compute-all
        ax.set_yscale("symlog", linthresh=min(pos))
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, n))
    fig.colorbar(sm, ax=ax, label="generation")
    ax.set_xlabel("MACs speedup vs compute-all (×)")
    ax.set_ylabel({"fidelity": "latent MSE vs uncached", "psnr": "latent PSNR vs uncached, dB (higher is better)",
                   "image-psnr": "image PSNR vs uncached, dB (higher is better)",
                   "adherence": "1 − adherence"}.get(objective, "quality loss"))
    ax.set_title("learned Pareto front per generation")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(search: Any, pop: list[Any]) -> dict[str, Any]:
    """Write front/*.json, front.png and history.json into the run folder; returns the summary."""
    out: Path = search.out
    main = getattr(search, "is_main", True)  # under `accelerate launch` only the main process writes
    front_dir = out / "front"
    if main:
        front_dir.mkdir(parents=True, exist_ok=True)
        for old in front_dir.glob("*.json"):
            old.unlink()
    rows = []
    for i, ind in enumerate(search.archive_front()):
        f = search.state.fitness[ind.key]
        speedup = search.full_macs / f["macs"]
        meta = {"name": f"search-{i:02d}-{speedup:.2f}x", "generator": {"kind": "nsga2-search"},
                "objectives": {"macs_fraction": f["macs"] / search.full_macs, "quality_loss": f["quality"],
                               "objective": search.cfg.objective},
                "metrics": f["metrics"], "macs": f["macs"], "macs_full": search.full_macs, "macs_speedup": speedup,
                "search": {"model": search.cfg.model, "prompts": search.cfg.prompts, "num_prompts": len(search.prompts),
                           "objective": search.cfg.objective, "seed": search.cfg.seed,
                           "generation": search.state.generation, "key": ind.key}}
        path = front_dir / f"front_{i:02d}.json"
        if main:
            search.schedule_of(ind.genome, **meta).save(path)
        rows.append({"file": str(path.relative_to(out)), "macs_speedup": speedup, "quality": f["quality"], **f["metrics"]})
    hist = search.state.history
    last = hist[-1]
    summary = {
        "config": {k: v for k, v in vars(search.cfg).items()},
        "generations": search.state.generation, "evaluations": len(search.state.fitness),
        "cache_hits": search.state.cache_hits, "wall_s": search.state.wall_s,
        "block_evals": last["block_evals"], "block_evals_naive": last["block_evals_naive"],
        "prefix_sharing_saving": last["block_evals_naive"] / last["block_evals"] if last["block_evals"] else 1.0,
        "full_macs_per_image": search.full_macs, "front": rows, "history": hist,
    }
    if not main:
        return summary
    (out / "history.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot_front(hist, _named_points(search), out / "front.png", search.cfg.objective)
    return summary
