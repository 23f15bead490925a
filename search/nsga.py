"""NSGA-II (DEAP) over caching schedules: minimise (MACs fraction, quality loss) on calibration prompts.

ECAD (arXiv 2506.15682) searched PixArt-α schedules with NSGA-II, 4-point crossover and bit-flip
mutation from heuristic seeds. Per generation::

    parents   = crowded binary tournament(P)            # Pareto rank, then crowding distance
    offspring = mutate(crossover(parents))              # k-point along steps, bit flips
    P         = selNSGA2(unique(P ∪ offspring), |P|)    # DEAP

Objectives: cost = MACs(schedule) / MACs(compute-all), exact from the cost model; quality from
`search.objectives`. A fitness cache keyed by schedule hash means no schedule is evaluated twice.
After every generation a JSON checkpoint holds population, fitness cache, RNG state and history, so
`resume=True` continues a killed run and ends with exactly the front of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from deap import base, tools

import dit_cache as dc

from . import genome as G
from .checkpoint import (
    CHECKPOINT,
    OutLock,
    SearchState,
    prompts_digest,
    read_checkpoint,
    rng_from_json,
    rng_to_json,
    write_checkpoint,
)
from .config import SearchConfig, SearchError, read_prompts
from .loops import LoopError, decoder
from .multifidelity import complete_front, evaluate_children
from .objectives import make_objective
from .pareto import hypervolume, pareto
from .screen import screen
from .workers import EvalSpec, _threads, load_model, make_pool


class _Fitness(base.Fitness):
    weights = (-1.0, -1.0)  # minimise (MACs fraction, quality loss)


class _Ind:
    """One candidate: its genome [steps, blocks, components] and DEAP fitness."""

    __slots__ = ("fitness", "genome", "key", "rank")

    def __init__(self, genome: np.ndarray) -> None:
        self.genome = genome
        self.key = hashlib.sha256(G.encode(genome).encode()).hexdigest()[:20]
        self.fitness = _Fitness()
        self.rank = 0


class Search:
    """One search run writing into `out` (checkpoint, history, front)."""

    def __init__(self, config: SearchConfig, out: str | Path, *, pipe: Any = None) -> None:
        config.check()
        self.cfg, self.out = config, Path(out)
        self._lock: OutLock | None = None
        if config.backend != "accelerate":  # under `accelerate launch` the main rank locks in run()
            self._take_lock()
        try:
            self._setup(config, out, pipe)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise

    def _setup(self, config: SearchConfig, out: str | Path, pipe: Any) -> None:
        """Prompts, model, objectives, workers and the cost model of the run."""
        self.prompts = read_prompts(config.prompts, config.num_prompts)
        self.seeds = [config.seed * 100_003 + i for i in range(len(self.prompts))]  # one fixed noise seed per prompt
        self.pipe = pipe if pipe is not None else load_model(config.model)
        self.call_defaults = dc.resolve.call_defaults(config.model, self.pipe)  # as `pipe(...)` and `dit-cache eval`
        self.space = dc.space_of(self.pipe.transformer)
        self.shape = (config.steps, *self.space.shape)
        self.mask = G.evolvable(self.space, config.steps)
        self.load_init()  # fail early on a bad --init file (before any hooks or workers exist)
        self.ops = G.Operators(config.cxpb, config.cx_points, config.mutpb, config.indpb, config.late_bias)
        try:
            decode = decoder(self.pipe, config.steps, self.call_defaults)  # this family's latents -> images
        except LoopError as e:
            raise SearchError(f"--model {config.model}: {e}") from None
        self.objective = make_objective(config.objective, self.pipe, self.prompts, decode=decode,
                                        clip_weights=config.clip_weights)
        self.n_sub = min(config.batch_size, len(self.prompts))  # multi-fidelity subset: the first prompt batch
        if config.multi_fidelity:
            if self.n_sub >= len(self.prompts):
                raise SearchError(f"--multi-fidelity needs more prompts ({len(self.prompts)}) than --batch-size "
                                  f"({config.batch_size}): the first batch is the subset")
            self.sub_objective = make_objective(config.objective, self.pipe, self.prompts[: self.n_sub], decode=decode,
                                                clip_weights=config.clip_weights)
        self.spill_dir = Path(out) / "prefix_spill"  # per-process state files; useless once a process ends
        if config.backend != "accelerate":  # left over by a killed run (accelerate: ranks start at different times)
            shutil.rmtree(self.spill_dir, ignore_errors=True)
        spec = EvalSpec(config.model, tuple(self.prompts), tuple(self.seeds), config.steps, config.batch_size,
                        config.memory_budget_mb << 20, config.prefix_sharing,
                        forecast_order=config.forecast_order if config.forecast else None,
                        spill_dir=str(self.spill_dir) if config.spill_mb > 0 else None,
                        spill_bytes=config.spill_mb << 20, call_defaults=self.call_defaults)
        self.pool = make_pool(spec, config.workers, config.backend, pipe=self.pipe)
        self.is_main = getattr(self.pool, "is_main", True)  # accelerate: every process runs the same search
        from .evaluator import Evaluator

        self._cost_ev = self.pool.ev if hasattr(self.pool, "ev") else Evaluator(
            self.pipe, self.prompts[:1], self.seeds[:1], config.steps, prefix_sharing=False,
            call_defaults=self.call_defaults)
        self.pool.counts.blocks_per_step = self._cost_ev.counts.blocks_per_step  # blocks x transformer calls
        self.full_macs = self._cost_ev.macs(dc.compute_all(self.space, config.steps))
        self.state = SearchState()
        self.rng = random.Random(config.seed)
        self.reference: torch.Tensor | None = None

    # -- schedules ----------------------------------------------------------------------------
    def schedule_of(self, genome: np.ndarray, **meta: Any) -> dc.Schedule:
        """The Schedule of a genome (mixed genomes: compute / reuse / forecast cells of --forecast-order)."""
        if genome.dtype != bool:
            return dc.Schedule.from_cells(genome, self.space, meta, self.cfg.forecast_order)
        return dc.Schedule(genome, self.space, meta)

    def _genome(self, compute: np.ndarray) -> np.ndarray:
        """Genome of a bool compute array in this search's encoding (int8 with --forecast)."""
        return G.as_mixed(compute) if self.cfg.forecast else np.array(compute, dtype=bool)

    def check_schedule(self, schedule: dc.Schedule) -> None:
        """Raise a clear error if a (seed) schedule does not fit the search model and encoding."""
        why = schedule.space.describe_mismatch(self.space)
        if why:
            raise SearchError(f"schedule {schedule.name!r} does not fit the search model: {why}")
        if schedule.forecast is not None and not self.cfg.forecast:
            raise SearchError(f"schedule {schedule.name!r} has forecast cells: search with --forecast (and "
                              f"--forecast-order {schedule.forecast_order}) to seed with it")
        if schedule.forecast is not None and schedule.forecast_order != self.cfg.forecast_order:
            raise SearchError(f"schedule {schedule.name!r} forecasts with order {schedule.forecast_order} but the "
                              f"search runs --forecast-order {self.cfg.forecast_order}")
        if schedule.steps != self.cfg.steps:
            raise SearchError(f"schedule {schedule.name!r} has {schedule.steps} steps but the search runs "
                              f"--steps {self.cfg.steps}")

    def _ind_key(self, compute: np.ndarray) -> str:
        """Fitness-cache key of a schedule's compute array in this search's encoding."""
        return _Ind(self._genome(compute)).key

    # -- evaluation ---------------------------------------------------------------------------
    def _references(self) -> torch.Tensor:
        """Uncached final latents for the calibration prompts (generated once, cached on disk)."""
        from safetensors.torch import load_file, save_file

        key = hashlib.sha256(json.dumps([self.cfg.model, self.prompts, self.seeds, self.cfg.steps]).encode()).hexdigest()[:16]
        path = self.out / "references.safetensors"
        if path.is_file():
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                if (f.metadata() or {}).get("key") == key:
                    return load_file(str(path))["latents"]
        ref = self.pool.evaluate([dc.compute_all(self.space, self.cfg.steps).compute])[0]
        if not self.is_main:
            return ref
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"latents": ref.contiguous()}, str(tmp), metadata={"key": key})
        os.replace(tmp, path)
        return ref

    def evaluate(self, inds: list[_Ind], count_hits: bool = True, parents: list[_Ind] | None = None) -> None:
        """Set fitness of every individual; only schedules never seen before are generated."""
        st = self.state
        todo: dict[str, _Ind] = {}
        for ind in inds:
            if ind.key in st.fitness or ind.key in todo:
                st.cache_hits += int(count_hits)
            else:
                todo[ind.key] = ind
        if todo:
            keep = [p.genome for p in parents] if parents is not None else None
            if self.cfg.multi_fidelity and parents is not None:
                evaluate_children(self, list(todo.values()), parents, keep)
            else:
                lats = self.pool.evaluate([i.genome for i in todo.values()], keep)
                for ind, lat in zip(todo.values(), lats):
                    self._store(ind, lat)
        for ind in inds:
            f = st.fitness[ind.key]
            ind.fitness.values = (f["macs"] / self.full_macs, f["quality"])

    def _store(self, ind: _Ind, lat: torch.Tensor) -> None:
        """Record the full evaluation of `ind` from its final latents over all prompts."""
        metrics = self.objective(lat, self.reference)
        entry = {"genome": G.encode(ind.genome), "macs": self._cost_ev.macs(ind.genome),
                 "quality": float(metrics.pop("quality")), "metrics": metrics}
        if self.cfg.multi_fidelity:
            n = self.n_sub
            entry["quality_sub"] = float(self.sub_objective(lat[:n], self.reference[:n])["quality"])
        self.state.fitness[ind.key] = entry

    def pool_batches(self) -> range:
        """Indices of the prompt batches."""
        return range(0, len(self.prompts), self.cfg.batch_size)

    # -- NSGA-II ------------------------------------------------------------------------------
    def load_init(self) -> list[dc.Schedule]:
        """The user's seed schedules (--init), checked against the search model."""
        try:
            from dit_cache.ecad import load_schedule_file
        except ImportError:
            load_schedule_file = dc.Schedule.load
        out = []
        for path in self.cfg.init:
            try:
                s = load_schedule_file(path)
            except dc.ScheduleError as e:
                raise SearchError(f"--init: {e}") from None
            self.check_schedule(s)
            out.append(s)
        return out

    def step_profile(self) -> dict[int, float]:
        """Quality loss of reusing each step 1..S−1 alone (whole step, every block and component): one probe
        schedule per step, evaluated like any candidate (fitness cache, prefix sharing, counted)."""
        steps = range(1, self.cfg.steps)
        probes = [_Ind(self._genome(G.step_probe(self.space, self.cfg.steps, i).compute)) for i in steps]
        self.evaluate(probes, count_hits=False)
        prof = {i: p.fitness.values[1] for i, p in zip(steps, probes)}
        self.state.step_profile = {str(i): v for i, v in prof.items()}  # JSON keys
        return prof

    def initial_population(self, profile: dict[int, float] | None = None) -> list[_Ind]:
        """Compute-all, the --init schedules, heuristic seeds (FORA, profiled, Δ-DiT-like, per-component),
        then random."""
        heur = G.heuristic_seeds(self.space, self.cfg.steps, profile)
        seeds = [heur[0], *self.load_init(), *heur[1:]]
        for s in seeds:
            self.check_schedule(s)
        genomes = [self._genome(s.compute) for s in seeds]
        if self.cfg.forecast:
            genomes[1:1 + len(self.cfg.init)] = [s.cells for s in seeds[1:1 + len(self.cfg.init)]]
            taylor = [G.as_mixed(dc.fora(self.space, self.cfg.steps, n).compute, forecast=True)
                      for n in range(2, 7) if n < self.cfg.steps]  # TaylorSeer-like: forecast between full steps
            genomes[1 + len(self.cfg.init):1 + len(self.cfg.init)] = taylor
        inds, seen = [], set()
        for g in genomes:
            ind = _Ind(g)
            if ind.key not in seen and len(inds) < self.cfg.population:
                seen.add(ind.key)
                inds.append(ind)
        while len(inds) < self.cfg.population:
            inds.append(_Ind(G.random_genome(self.rng, self.mask, mixed=self.cfg.forecast)))
        return inds

    @staticmethod
    def _rank(pop: list[_Ind]) -> None:
        """Pareto rank and crowding distance within `pop` (used by the tournament)."""
        for r, front in enumerate(tools.sortNondominated(pop, len(pop))):
            tools.emo.assignCrowdingDist(front)
            for ind in front:
                ind.rank = r

    def _tournament(self, pop: list[_Ind]) -> _Ind:
        a, b = self.rng.sample(pop, 2)
        if a.rank != b.rank:
            return a if a.rank < b.rank else b
        ca, cb = a.fitness.crowding_dist, b.fitness.crowding_dist
        if ca != cb:
            return a if ca > cb else b
        return a if self.rng.random() < 0.5 else b

    def offspring(self, pop: list[_Ind]) -> list[_Ind]:
        """Crowded tournament, k-point crossover along steps, bit-flip mutation."""
        self._rank(pop)
        parents = [self._tournament(pop) for _ in range(len(pop) + len(pop) % 2)]
        kids = []
        for a, b in zip(parents[::2], parents[1::2]):
            g1, g2 = a.genome, b.genome
            if self.rng.random() < self.ops.cxpb:
                g1, g2 = G.crossover(self.rng, g1, g2, self.ops.cx_points, self.ops.late_bias)
            for g in (g1, g2):
                if self.rng.random() < self.ops.mutpb:
                    g = G.mutate(self.rng, g, self.mask, self.ops.indpb, self.ops.late_bias)
                kids.append(_Ind(np.array(g)))
        return kids[: len(pop)]

    def select(self, pop: list[_Ind], kids: list[_Ind]) -> list[_Ind]:
        """NSGA-II survivor selection over the union, duplicates (same schedule) dropped first."""
        seen, uniq, dups = set(), [], []
        for ind in pop + kids:
            (dups if ind.key in seen else uniq).append(ind)
            seen.add(ind.key)
        chosen = tools.selNSGA2(uniq, min(len(uniq), self.cfg.population))
        return chosen + dups[: self.cfg.population - len(chosen)]

    # -- checkpoint ---------------------------------------------------------------------------
    def _save(self, pop: list[_Ind]) -> None:
        st = self.state
        st.population = [G.encode(i.genome) for i in pop]
        st.rng = rng_to_json(self.rng.getstate())
        st.counts = self.pool.counts.to_dict() | {"base_" + k: v for k, v in self._base_counts.items()}
        st.prompts_sha256 = prompts_digest(self.prompts)
        if self.is_main:
            write_checkpoint(self.out / CHECKPOINT, asdict(self.cfg), self.shape, st)

    def _load(self) -> list[_Ind]:
        try:
            data, self.state = read_checkpoint(self.out / CHECKPOINT)
        except ValueError as e:
            raise SearchError(str(e)) from None
        diff = self.cfg.changed_from(data["config"])
        if diff or tuple(data["shape"]) != self.shape:
            raise SearchError(f"--resume: the checkpoint in {self.out} was made with other settings {diff}; "
                              "use the same settings or another --out")
        if self.state.prompts_sha256 is None:  # written by dit-cache before the hash was recorded
            warnings.warn(f"--resume: the checkpoint in {self.out} predates prompt hashes, so a changed {self.cfg.prompts} "
                          "cannot be detected: resume only if that file is unchanged", UserWarning, stacklevel=2)
        elif self.state.prompts_sha256 != prompts_digest(self.prompts):
            raise SearchError(f"--resume: the calibration prompts in {self.cfg.prompts} differ from those the "
                              f"checkpoint in {self.out} was measured on (the file changed): restore that file, "
                              "or start a new run with another --out")
        self.rng.setstate(rng_from_json(self.state.rng))
        self._base_counts = {k[5:]: v for k, v in self.state.counts.items() if k.startswith("base_")}
        for k in ("steps_run", "steps_naive", "candidates"):
            self._base_counts[k] = self.state.counts.get(k, 0) + self._base_counts.get(k, 0)
        return [_Ind(G.decode(h, self.shape)) for h in self.state.population]

    # -- main loop ----------------------------------------------------------------------------
    def front(self, pop: list[_Ind]) -> list[_Ind]:
        """Non-dominated, distinct individuals of `pop`, by increasing MACs."""
        idx = pareto([tuple(i.fitness.values) for i in pop])
        return sorted((pop[i] for i in idx), key=lambda i: i.fitness.values)

    def archive_front(self) -> list[_Ind]:
        """Non-dominated schedules among *every* fully evaluated one (the fitness cache is the archive):
        selection may drop a front member from the population, the archive never loses it."""
        inds = []
        for f in self.state.fitness.values():
            if f.get("partial"):
                continue
            ind = _Ind(G.decode(f["genome"], self.shape))
            ind.fitness.values = (f["macs"] / self.full_macs, f["quality"])
            inds.append(ind)
        return self.front(inds)

    def _record(self, pop: list[_Ind], t0: float) -> dict[str, Any]:
        st = self.state
        front = self.archive_front()
        pts = [tuple(i.fitness.values) for i in front]
        if st.hv_ref is None:
            qmax = max(i.fitness.values[1] for i in pop)
            st.hv_ref = [1.05, 1.1 * qmax if qmax > 0 else 1.0]
        c = self.pool.counts
        b = self._base_counts
        steps_run, steps_naive = c.steps_run + b.get("steps_run", 0), c.steps_naive + b.get("steps_naive", 0)
        st.wall_s += time.perf_counter() - t0
        row = {"generation": st.generation, "hypervolume": hypervolume(pts, tuple(st.hv_ref)),
               "front_size": len(front), "front": [list(p) for p in pts], "evaluations": len(st.fitness),
               "cache_hits": st.cache_hits, "screened": st.screened, "partial": sum(1 for f in st.fitness.values() if f.get("partial")),
               "steps_run": steps_run, "steps_naive": steps_naive,
               "block_evals": steps_run * c.blocks_per_step, "block_evals_naive": steps_naive * c.blocks_per_step,
               "wall_s": st.wall_s}
        st.history.append(row)
        return row

    def run(self, resume: bool = False, progress: bool = True) -> dict[str, Any]:
        """Run (or continue) the search; writes checkpoint, history.json, front/ and front.png into `out`.

        Torch runs single-threaded here (as in every worker), so results never depend on thread counts.
        """
        with _threads(1):
            return self._run(resume, progress)

    def _run(self, resume: bool, progress: bool) -> dict[str, Any]:
        from tqdm.auto import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        if self.is_main and self._lock is None:
            self._take_lock()
        self._base_counts: dict[str, int] = {}
        self.pool.barrier()  # accelerate: no process may see a checkpoint that another one writes below
        if not resume and (self.out / CHECKPOINT).exists():
            raise SearchError(f"{self.out} already holds a search checkpoint: pass --resume to continue it, "
                              "or choose another --out")
        pop = self._load() if resume else None
        t0 = time.perf_counter()
        self.reference = self._references()
        if pop is None:
            self._store(_Ind(self._genome(dc.compute_all(self.space, self.cfg.steps).compute)), self.reference)
            pop = self.initial_population(self.step_profile() if self.cfg.profile_seeds else None)
            self.evaluate(pop)
            pop = self.select(pop, [])
            self.state.generation = 0
            self._finish_generation(pop, t0)
        else:
            self.evaluate(pop, count_hits=False)  # all cached: restores fitness values
        bar = tqdm(total=self.cfg.generations, initial=self.state.generation, desc="search", unit="gen",
                   disable=not (progress and self.is_main))
        self._postfix(bar)
        while self.state.generation < self.cfg.generations:
            t0 = time.perf_counter()
            kids = screen(self, pop) if self.cfg.screen_keep < 1 else self.offspring(pop)
            self.evaluate(kids, parents=pop)
            pop = self.select(pop, kids)
            self.state.generation += 1
            self._finish_generation(pop, t0)
            bar.update()
            self._postfix(bar)
        bar.close()
        if self.cfg.multi_fidelity:
            complete_front(self, pop)
        from .report import write_outputs

        return write_outputs(self, pop)

    def _postfix(self, bar: Any) -> None:
        if self.state.history:
            h = self.state.history[-1]
            bar.set_postfix_str(f"front {h['front_size']} hv {h['hypervolume']:.4f} evals {h['evaluations']}")

    def _finish_generation(self, pop: list[_Ind], t0: float) -> None:
        self._record(pop, t0)
        self._save(pop)

    def _take_lock(self) -> None:
        """Hold the run folder's lock (one run per --out at a time)."""
        try:
            self._lock = OutLock(self.out)
        except ValueError as e:
            raise SearchError(str(e)) from None

    def close(self) -> None:
        """Stop workers, remove hooks and delete spilled prefix states (worker processes never close their
        evaluators, so the main process removes the whole spill folder); release the run folder."""
        if self._lock is not None:
            self._lock.release()
        self.pool.close()
        if self._cost_ev is not getattr(self.pool, "ev", None):
            self._cost_ev.close()
        if self.is_main:
            shutil.rmtree(self.spill_dir, ignore_errors=True)

