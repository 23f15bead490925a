"""Latency and peak memory: warm-up, repeats, variants interleaved (rotated each round), median and spread;
CUDA events + synchronize on GPU, `time.perf_counter` on CPU; CUDA max allocated or process RSS."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

__all__ = ["PeakMemory", "Timing", "time_interleaved"]


@dataclass
class Timing:
    """Timed runs of one variant (seconds) and its peak memory (bytes)."""

    name: str
    seconds: list[float] = field(default_factory=list)
    peak_bytes: int = 0
    memory_kind: str = "rss"

    def summary(self) -> dict[str, float | int | str | list[float]]:
        """Median, interquartile range, min, max, mean, std and the raw runs."""
        s = sorted(self.seconds)
        q = statistics.quantiles(s, n=4, method="inclusive") if len(s) > 1 else [s[0]] * 3
        return {"median_s": statistics.median(s), "iqr_s": q[2] - q[0], "min_s": s[0], "max_s": s[-1],
                "mean_s": statistics.fmean(s), "std_s": statistics.stdev(s) if len(s) > 1 else 0.0,
                "runs_s": list(self.seconds), "peak_memory_bytes": self.peak_bytes, "memory_kind": self.memory_kind}


class PeakMemory:
    """Context manager: peak CUDA memory allocated on `device`, or peak process RSS sampled every `every` s."""

    def __init__(self, device: torch.device | str = "cpu", every: float = 0.005):
        self.device, self.every = torch.device(device), every
        self.kind = "cuda_max_allocated" if self.device.type == "cuda" else "rss"
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        if self.kind == "cuda_max_allocated":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        rss, self.kind = _rss_reader()
        self._stop = threading.Event()
        self.peak = rss()

        def sample() -> None:
            while not self._stop.wait(self.every):
                self.peak = max(self.peak, rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.kind == "cuda_max_allocated":
            torch.cuda.synchronize(self.device)
            self.peak = int(torch.cuda.max_memory_allocated(self.device))
        else:
            self._stop.set()
            self._thread.join()


def _rss_reader() -> tuple[Callable[[], int], str]:
    """Current process RSS in bytes (psutil), else the lifetime peak RSS from getrusage (Linux: KiB)."""
    try:
        import psutil

        proc = psutil.Process()
        return (lambda: proc.memory_info().rss), "rss"
    except ImportError:
        import resource

        return (lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024), "rss_lifetime_peak"


def _time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for one call: CUDA events around it on GPU (after a synchronize), perf_counter on CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_interleaved(variants: dict[str, Callable[[], object]], *, warmup: int = 1, repeats: int = 3,
                     device: torch.device | str = "cpu", setup: Callable[[str], object] | None = None,
                     teardown: Callable[[str, object], None] | None = None,
                     progress: Callable[[str], None] | None = None) -> dict[str, Timing]:
    """Time each variant `repeats` times after `warmup` untimed rounds; round r runs the variants rotated by r.

    `setup(name)` runs untimed before each call (e.g. install hooks) and `teardown(name, state)` after it.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    device = torch.device(device)
    names = list(variants)
    out = {n: Timing(n) for n in names}
    peaks = {n: PeakMemory(device) for n in names}
    for r in range(warmup + repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            state = setup(name) if setup else None
            try:
                with peaks[name] as pm:
                    dt = _time_once(variants[name], device)
                out[name].peak_bytes = max(out[name].peak_bytes, pm.peak)
                out[name].memory_kind = pm.kind
            finally:
                if teardown:
                    teardown(name, state)
            if r >= warmup:
                out[name].seconds.append(dt)
            if progress:
                progress(name)
    return out
