"""Learned caching schedules: NSGA-II (DEAP) over [steps × blocks × components] compute/reuse bits.

Modules: `nsga` (the search loop), `config` (settings, prompts file), `genome` (encoding, seeds,
operators), `loop` (resumable PixArt denoising loop), `prefix` + `evaluator` (exact prefix sharing),
`objectives`, `forecast` (reuse/compute/forecast cells), `multifidelity`, `workers` (processes / Ray),
`checkpoint`, `pareto`, `report` (front files, plot, history), `validate` (held-out check), `cli`.
"""
