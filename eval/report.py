"""Evaluation report: report.json (every number), report.md, self-contained report.html, Pareto plot, grids."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

__all__ = ["COLUMNS", "QUALITY", "format_table", "jsonable", "pareto_plot", "schedule_heatmap", "write_report"]

# (row key, header, format, higher is better) — the summary table, in order
COLUMNS: tuple[tuple[str, str, str, bool | None], ...] = (
    ("variant", "schedule", "{}", None),
    ("compute_fraction", "computed", "{:.0%}", None),
    ("macs_per_image_g", "GMACs/img", "{:.3g}", False),
    ("macs_speedup", "MACs speedup", "{:.2f}×", True),
    ("wall_median_s", "wall median (s)", "{:.3f}", False),
    ("wall_iqr_s", "wall IQR (s)", "{:.3f}", False),
    ("wall_speedup", "wall speedup", "{:.2f}×", True),
    ("peak_memory_mb", "peak mem (MB)", "{:.0f}", False),
    ("psnr_db", "PSNR (dB)", "{:.2f}", True),
    ("ssim", "SSIM", "{:.4f}", True),
    ("lpips", "LPIPS", "{:.4f}", False),
    ("latent_mse", "latent MSE", "{:.3g}", False),
    ("fid_vs_uncached", "FID vs uncached", "{:.2f}", False),
    ("fid_vs_real", "FID vs real", "{:.2f}", False),
    ("clip_score", "CLIP score", "{:.2f}", True),
    ("adherence", "all correct", "{:.1%}", True),
    ("attribute_accuracy", "attribute acc.", "{:.1%}", True),
)
QUALITY = ("psnr_db", "ssim", "lpips", "latent_mse", "fid_vs_uncached", "fid_vs_real", "clip_score", "adherence",
           "attribute_accuracy")


def jsonable(x: Any) -> Any:
    """Make numbers JSON-safe: numpy scalars -> Python, inf/nan -> 'inf'/'-inf'/'nan' strings."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return fmt.format(value)


def _present(rows: list[dict]) -> list[tuple[str, str, str, bool | None]]:
    return [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows)]


def format_table(rows: list[dict]) -> str:
    """Markdown table of the rows (columns without any value are left out)."""
    cols = _present(rows)
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(k), f) for k, _, f, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(rows: list[dict]) -> str:
    cols = _present(rows)
    head = "".join(f"<th>{html.escape(c[1])}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(k), f))}</td>" for k, _, f, _ in cols) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pareto_front(points: list[tuple[float, float, str]], higher_better: bool) -> list[tuple[float, float, str]]:
    """Points not dominated in (speedup up, quality up/down)."""
    sign = 1 if higher_better else -1
    front = [p for p in points if not any(q[0] >= p[0] and sign * q[1] >= sign * p[1] and q[:2] != p[:2] for q in points)]
    return sorted(front)


def pareto_plot(rows: list[dict], path: Path) -> Path | None:
    """One panel per quality metric: quality vs MACs speedup (o) and wall speedup (^), Pareto front dashed."""
    from matplotlib.figure import Figure  # object-oriented: leaves pyplot's backend (e.g. a notebook's) alone

    metrics = [(k, h, hb) for k, h, _, hb in COLUMNS if k in QUALITY
               and any(isinstance(r.get(k), (int, float)) and math.isfinite(r[k]) for r in rows)]
    if not metrics:
        return None
    n = len(metrics)
    cols = min(n, 3)
    fig = Figure(figsize=(4.2 * cols, 3.4 * ((n + cols - 1) // cols)))
    axes = fig.subplots((n + cols - 1) // cols, cols, squeeze=False)
    for ax, (key, head, hb) in zip(axes.flat, metrics):
        for xkey, marker, label in (("macs_speedup", "o", "MACs speedup"), ("wall_speedup", "^", "wall speedup")):
            pts = [(r[xkey], r[key], r["variant"]) for r in rows
                   if isinstance(r.get(xkey), (int, float)) and isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
            if not pts:
                continue
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label, alpha=0.8)
            if xkey == "macs_speedup":
                for x, y, name in pts:
                    ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
                front = _pareto_front(pts, bool(hb))
                ax.plot([p[0] for p in front], [p[1] for p in front], "--", lw=0.8, color="gray")
        ax.set_xlabel("speedup (×)")
        ax.set_ylabel(head + (" ↑" if hb else " ↓"))
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _b64(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


CSS = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:13px}"
       "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}"
       "td:first-child{text-align:left}img{max-width:100%}pre{background:#f7f7f7;padding:.6em;overflow-x:auto}")


def write_report(out: Path, report: dict, pareto: Path | None, grids: list[Path]) -> dict[str, Path]:
    """Write report.json, report.md and report.html (images embedded as base64) into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    rows = report["rows"]
    table = format_table(rows)
    cfg = report["config"]
    title = f"dit-cache eval: {cfg['model']}, {cfg['steps']} steps, {report['num_samples']} samples"
    notes = report.get("notes", [])
    md = [f"# {title}", "", table, ""]
    md += ["Speedups are against the uncached baseline: MACs exact from the cost model (per image), wall time = "
           "median of interleaved timed runs. Fidelity metrics compare with the uncached output at the same seed.", ""]
    if notes:
        md += ["Notes:", *[f"- {n}" for n in notes], ""]
    if pareto is not None:
        md += [f"![Pareto]({pareto.name})", ""]
    md += [f"![grid]({g.name})" for g in grids]
    md += ["", f"Command: `{report['command']}`", "", f"Machine: {report['machine'].get('summary', '')}"]
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(jsonable(report), indent=1) + "\n")
    paths["md"].write_text("\n".join(md) + "\n")
    body = [f"<h1>{html.escape(title)}</h1>", _html_table(rows), f"<p>{html.escape(md[4])}</p>"]
    if notes:
        body.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    if pareto is not None:
        body.append(f"<h2>Speedup vs quality</h2><img alt='pareto' src='{_b64(pareto)}'>")
    for g in grids:
        body.append(f"<h2>{html.escape(g.stem)}</h2><p>same prompt and seed across schedules</p>"
                    f"<img alt='{html.escape(g.stem)}' src='{_b64(g)}'>")
    body.append(f"<h2>Run</h2><pre>{html.escape(json.dumps(jsonable({k: report[k] for k in ('command', 'config', 'versions', 'machine')}), indent=1))}</pre>")
    paths["html"].write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                             f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")
    return paths


def schedule_heatmap(schedule, title: str | None = None):
    """Matplotlib figure of a schedule: one panel per component, steps (x) × blocks (y), dark = compute."""
    import matplotlib.pyplot as plt  # a pyplot figure, so that notebooks show it inline
    import numpy as np

    comp = schedule.compute  # [steps, blocks, components]
    app = schedule.space.applicable  # [blocks, components]
    names = schedule.space.components
    fig, axes = plt.subplots(1, len(names), figsize=(2.2 + 2.6 * len(names), 0.8 + 0.18 * comp.shape[1]), squeeze=False)
    for c, ax in enumerate(axes[0]):
        img = np.where(app[None, :, c], comp[:, :, c].astype(float), np.nan).T  # (blocks, steps)
        ax.imshow(img, aspect="auto", cmap="Greys", vmin=-0.15, vmax=1.0, interpolation="nearest")
        ax.set_title(f"{names[c]} ({np.nanmean(img):.0%} computed)", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("block" if c == 0 else "")
    fig.suptitle(title or f"{schedule.name}: dark = compute, light = reuse", fontsize=10)
    fig.tight_layout()
    return fig
