"""Learned caching schedules: NSGA-II (DEAP) over [steps × blocks × components] compute/reuse bits.

Modules: `nsga` (the search loop), `config` (settings, prompts file), `genome` (encoding, seeds,
operators), `loops` (resumable denoising loops, one file per pipeline family), `prefix` + `evaluator` (exact prefix
sharing), `objectives`, `multifidelity`, `workers` (processes / Ray),
`checkpoint`, `pareto`, `report` (front files, plot, history), `validate` (held-out check), `cli`.
"""
