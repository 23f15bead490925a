"""Where candidate schedules are evaluated: in this process, in N local processes, or on a Ray cluster.

Every worker loads its own pipeline from the model spec and keeps its own prefix-state cache. The
sorted candidate list is split into N contiguous chunks (neighbours share prefixes), chunk i goes to
worker i. Each worker runs torch with `threads` threads (default 1) so results do not depend on the
number of workers: evaluation is exact, so N workers give bit-identical latents to 1 (tested).

Local processes use ``torch.multiprocessing`` (fork for CPU on Linux, spawn for CUDA); on a multi-GPU
machine worker i uses ``cuda:i``. ``--backend ray`` needs ``pip install 'dit-cache[ray]'``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .evaluator import DEFAULT_BUDGET, EvalCounts, Evaluator

BACKENDS = ("local", "ray", "accelerate")


@dataclass(frozen=True)
class EvalSpec:
    """Everything a worker needs to build its evaluator (plain data: crosses process boundaries)."""

    model: str
    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    batch_size: int = 16
    budget_bytes: int = DEFAULT_BUDGET
    prefix_sharing: bool = True
    threads: int = 1
    forecast_order: int | None = None
    device: str = "cpu"
    spill_dir: str | None = None  # evicted prefix states go to <spill_dir>/pid<PID>/ (None: dropped)
    spill_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    call_defaults: dict[str, Any] | None = None  # the model's call defaults (`dit_cache.resolve.call_defaults`)


def load_model(model: str, device: str = "cpu") -> Any:
    """The pipeline a `--model` spec names (`dit_cache.load_pipeline`: tiny, random-tiny[:FAMILY[:LAYERS]], ...)."""
    from dit_cache.resolve import load_pipeline

    return load_pipeline(model, device).pipe


@contextlib.contextmanager
def _threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _build(spec: EvalSpec, pipe: Any = None) -> Evaluator:
    pipe = pipe if pipe is not None else load_model(spec.model, spec.device)
    return Evaluator(pipe, list(spec.prompts), list(spec.seeds), spec.steps, batch_size=spec.batch_size,
                     budget_bytes=spec.budget_bytes, prefix_sharing=spec.prefix_sharing,
                     forecast_order=spec.forecast_order,
                     spill_dir=f"{spec.spill_dir}/pid{os.getpid()}" if spec.spill_dir else None,
                     spill_bytes=spec.spill_bytes, call_defaults=spec.call_defaults)


def _run(ev: Evaluator, computes: list[np.ndarray], opts: dict[str, Any] | None = None,
         ) -> tuple[list[np.ndarray], dict[str, int]]:
    """Evaluate genomes on `ev`: (final latents as arrays, counts spent)."""
    from dit_cache.schedule import Schedule

    before = EvalCounts(**{k: getattr(ev.counts, k) for k in ("steps_run", "steps_naive", "candidates")})
    plans = [Schedule(c, ev.space) if c.dtype == bool else c for c in computes]  # int8 = mixed genome
    lat = ev.evaluate(plans, **(opts or {}))
    delta = {k: getattr(ev.counts, k) - getattr(before, k) for k in ("steps_run", "steps_naive", "candidates")}
    return [t.numpy() for t in lat], delta


def _chunks(n_items: int, n: int) -> list[range]:
    k, r = divmod(n_items, n)
    out, start = [], 0
    for i in range(n):
        size = k + (1 if i < r else 0)
        out.append(range(start, start + size))
        start += size
    return [c for c in out if len(c)]


class Pool:
    """Evaluates genomes [steps, blocks, components] to final latents; tracks the work spent."""

    workers = 1

    def __init__(self) -> None:
        self.counts = EvalCounts()

    def evaluate(self, computes: list[np.ndarray], keep: list[np.ndarray] | None = None,
                 batches: list[int] | None = None) -> list[torch.Tensor]:
        """Final latents per genome, in input order; `keep` = genomes whose prefix states to protect,
        `batches` = only these prompt batches (default all)."""
        if not computes:
            return []
        order = sorted(range(len(computes)), key=lambda i: computes[i].tobytes())
        chunks = _chunks(len(order), self.workers)
        results = self._map([[computes[order[j]] for j in c] for c in chunks], {"keep": keep, "batches": batches})
        out: list[Any] = [None] * len(computes)
        for c, (lats, delta) in zip(chunks, results):
            for j, lat in zip(c, lats):
                out[order[j]] = torch.from_numpy(np.array(lat))
            self.counts.steps_run += delta["steps_run"]
            self.counts.steps_naive += delta["steps_naive"]
            self.counts.candidates += delta["candidates"]
        return out

    def _map(self, chunks: list[list[np.ndarray]], opts: dict[str, Any],
             ) -> list[tuple[list[np.ndarray], dict[str, int]]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers."""

    def barrier(self) -> None:
        """Wait for every process of a multi-process job (no-op here)."""


class InProcessPool(Pool):
    """One evaluator in this process (reuses the caller's pipeline)."""

    def __init__(self, spec: EvalSpec, pipe: Any = None) -> None:
        super().__init__()
        self.spec = spec
        self.ev = _build(spec, pipe)
        self.counts.blocks_per_step = self.ev.counts.blocks_per_step

    def _map(self, chunks, opts):
        with _threads(self.spec.threads):
            return [_run(self.ev, c, opts) for c in chunks]

    def close(self) -> None:
        self.ev.close()


class AcceleratePool(Pool):
    """One pipeline per process of an `accelerate launch` job: every process runs the same (deterministic)
    search, evaluates its contiguous share of each generation's candidates, and all shares are gathered, so
    every process holds every result; only the main process writes files."""

    def __init__(self, spec: EvalSpec, pipe: Any = None) -> None:
        super().__init__()
        from accelerate import PartialState

        self.state = PartialState(cpu=spec.device == "cpu")
        self.workers = self.state.num_processes
        self.is_main = self.state.is_main_process
        device = spec.device if spec.device == "cpu" else str(self.state.device)
        self.spec = EvalSpec(**{**spec.__dict__, "device": device})
        self.ev = _build(self.spec, pipe.to(device) if pipe is not None else None)
        self.counts.blocks_per_step = self.ev.counts.blocks_per_step

    def _map(self, chunks, opts):
        from accelerate.utils import gather_object

        i = self.state.process_index
        with _threads(self.spec.threads):
            mine = [_run(self.ev, chunks[i], opts)] if i < len(chunks) else []
        return gather_object(mine) if self.workers > 1 else mine  # in rank order = chunk order

    def barrier(self) -> None:
        self.state.wait_for_everyone()

    def close(self) -> None:
        self.ev.close()


_WORKER: Evaluator | None = None


def _exit_with_parent(poll_s: float = 1.0) -> None:
    """Exit this worker process when its parent dies (a killed search must not leave workers behind)."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:  # re-parented: the search process is gone
                os._exit(1)

    threading.Thread(target=watch, name="dit-cache-parent-watch", daemon=True).start()


def _init_worker(spec: EvalSpec, counter: Any) -> None:
    global _WORKER
    _exit_with_parent()
    torch.set_num_threads(spec.threads)
    with counter.get_lock():
        rank = counter.value
        counter.value += 1
    device = spec.device
    if device == "cuda" and torch.cuda.device_count() > 1:
        device = f"cuda:{rank % torch.cuda.device_count()}"
    _WORKER = _build(EvalSpec(**{**spec.__dict__, "device": device}))


def _worker_run(computes: list[np.ndarray], opts: dict[str, Any]):
    assert _WORKER is not None
    return _run(_WORKER, computes, opts)


class ProcessPool(Pool):
    """N local worker processes (torch.multiprocessing), one pipeline each."""

    def __init__(self, spec: EvalSpec, workers: int, blocks_per_step: int) -> None:
        super().__init__()
        from concurrent.futures import ProcessPoolExecutor

        import torch.multiprocessing as mp

        # fork is cheap on Linux CPU (workers run 1 thread, as DataLoader workers do); CUDA needs spawn
        method = "fork" if spec.device == "cpu" and "fork" in mp.get_all_start_methods() else "spawn"
        ctx = mp.get_context(method)
        counter = ctx.Value("i", 0)  # worker rank, for the GPU each one uses
        self.workers = workers
        self.exe = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                       initargs=(spec, counter))
        self.counts.blocks_per_step = blocks_per_step

    def _map(self, chunks, opts):
        return list(self.exe.map(_worker_run, chunks, [opts] * len(chunks)))

    def close(self) -> None:
        self.exe.shutdown(wait=True, cancel_futures=True)


class RayPool(Pool):
    """N Ray actors, one pipeline each (a local Ray instance is started when none is running)."""

    def __init__(self, spec: EvalSpec, workers: int, blocks_per_step: int) -> None:
        super().__init__()
        try:
            import ray
        except ImportError:
            raise ImportError("--backend ray needs Ray: pip install 'dit-cache[ray]'") from None
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            self.started = True

        @ray.remote(num_cpus=1)
        class _Actor:
            def __init__(self, spec: EvalSpec) -> None:
                torch.set_num_threads(spec.threads)
                self.ev = _build(spec)

            def run(self, computes, opts):
                return _run(self.ev, computes, opts)

        self.workers = workers
        self.actors = [_Actor.remote(spec) for _ in range(workers)]
        self.counts.blocks_per_step = blocks_per_step

    def _map(self, chunks, opts):
        return self.ray.get([a.run.remote(c, opts) for a, c in zip(self.actors, chunks)])

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        if self.started:
            self.ray.shutdown()


def make_pool(spec: EvalSpec, workers: int = 1, backend: str = "local", pipe: Any = None) -> Pool:
    """InProcessPool for 1 local worker, ProcessPool for N, RayPool for backend 'ray', AcceleratePool for
    'accelerate' (as many workers as `accelerate launch` started processes)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if backend == "accelerate":
        return AcceleratePool(spec, pipe)
    if backend == "local" and workers == 1:
        return InProcessPool(spec, pipe)
    if backend == "ray":  # (block evaluations per step: set by the search from its cost evaluator)
        return RayPool(spec, workers, 0)
    return ProcessPool(spec, workers, 0)
