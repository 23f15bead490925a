"""Skip limits: the knobs every gated backend shares (First-Block, TeaCache, CG-Taylor) — when a gate that
says "skip" is overruled, so a threshold never runs away with quality.

With gate decision g_k ("skip step k"), c_k the skips in a row before step k and n_k the skips so far in
this generation (both per CFG branch)::

    skip_k = g_k  and  k >= warmup  and  k not in refresh_steps  and  not (refresh_every and k % refresh_every == 0)
                  and  (max_consecutive is None or c_k < max_consecutive)
                  and  (max_total is None or n_k < max_total)

The defaults overrule nothing (bit-identical to the gate alone). cache-dit calls these Fn warm-up steps,
max cached steps, max continuous cached steps; diffusers' FirstBlockCache has none of them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SkipLimits:
    """When a gated backend must compute although its gate says skip (all off by default)."""

    warmup: int = 0  # the first `warmup` steps always compute
    max_consecutive: int | None = None  # at most this many skipped steps in a row
    max_total: int | None = None  # at most this many skipped steps per generation
    refresh_every: int | None = None  # steps k with k % refresh_every == 0 always compute
    refresh_steps: tuple[int, ...] = ()  # these steps always compute

    def __post_init__(self) -> None:
        for name in ("warmup", "max_consecutive", "max_total", "refresh_every"):
            v = getattr(self, name)
            low = 1 if name == "refresh_every" else 0
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
                raise ValueError(f"SkipLimits.{name} must be a whole number >= {low}" +
                                 ("" if name == "warmup" else " or None") + f", got {v!r}")
        steps = tuple(self.refresh_steps)
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in steps):
            raise ValueError(f"SkipLimits.refresh_steps must be step indices >= 0, got {self.refresh_steps!r}")
        object.__setattr__(self, "refresh_steps", steps)

    def forced(self, step: int) -> bool:
        """Step `step` computes whatever the gate and the counters say (warm-up, refresh)."""
        return (step < self.warmup or step in self.refresh_steps
                or (self.refresh_every is not None and step % self.refresh_every == 0))


@dataclass
class SkipCounter:
    """Per-branch counters of one generation: skips in a row and in total."""

    run: int = 0
    total: int = 0

    def decide(self, limits: SkipLimits, step: int, gate: bool) -> bool:
        """The gate's decision after the limits; updates the counters."""
        skip = (gate and not limits.forced(step)
                and (limits.max_consecutive is None or self.run < limits.max_consecutive)
                and (limits.max_total is None or self.total < limits.max_total))
        self.run = self.run + 1 if skip else 0
        self.total += int(skip)
        return skip

