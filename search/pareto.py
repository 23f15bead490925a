"""Pareto utilities for two minimised objectives: non-dominated set and hypervolume."""

from __future__ import annotations


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """2-D hypervolume (both minimised) dominated by `points` up to `ref`."""
    pts = sorted({(x, y) for x, y in points if x < ref[0] and y < ref[1]})
    hv, best_y = 0.0, ref[1]
    for x, y in pts:
        if y < best_y:
            hv += (ref[0] - x) * (best_y - y)
            best_y = y
    return hv


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points (minimisation), first occurrence of duplicates only."""
    out = []
    for i, p in enumerate(points):
        dominated = any((q[0] <= p[0] and q[1] <= p[1] and q != p) or (q == p and j < i) for j, q in enumerate(points))
        if not dominated:
            out.append(i)
    return out
