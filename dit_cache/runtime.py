"""`accelerate()`: install caching hooks on one transformer instance; `CacheHandle.remove()` undoes it.

Two kinds of hooks, both through ``diffusers.hooks.HookRegistry`` on *this instance* only:

1. a step tracker on the transformer's forward sets (generation, step, branch) from the pipeline's
   scheduler, or from the timestep argument without one (`tracking.StepTracker`); a new generation
   resets all state;
2. a hook on every cacheable component runs it or returns the backend's value, as planned for the call
   by the step hook (the backend's "compute or not?" and reused value, asked before the call; kept outputs
   handed to the backend after it); or, for block-level backends (``backend.level == "block"``:
   Δ-DiT, TeaCache, First-Block Cache, CG-Taylor, ERTACache), a hook on every block that runs it or
   skips a contiguous block range with the backend's value (the rest of the range passes through);
   a component-level backend that ``reuses_blocks`` (`BlockReuseConfig`) also gets a block hook, planned per
   call like the components: return the block's input + its cached residual, or run it.

`CacheHandle.compile` (whole transformer) and `CacheHandle.compile_blocks` (every block) keep the
deciding hooks outside the compiled frames, so graphs follow the schedule's patterns, never the step.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from pathlib import Path
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from torch import nn
from torch.utils._pytree import tree_leaves

from .adapters import Adapter, Site, get_adapter
from .backends import Backend, BackendConfig, StepContext
from .backends.base import streams_add, streams_sub
from .backends.static import schedule_backend
from .macs import meta_like, meta_model_of, step_cost
from .schedule import Schedule, ScheduleError, ScheduleSpace
from .stats import CacheStats
from .tracking import StepTracker

STEP_HOOK = "dit_cache.step"
MANY_STEP_PATTERNS = 4  # above this many step patterns compile() compiles per block (README, "torch.compile")
COMPILE_SCOPES = ("auto", "model", "blocks")
COMPONENT_HOOK = "dit_cache.component"
BLOCK_HOOK = "dit_cache.block"


def space_of(transformer: nn.Module, adapter: Adapter | None = None) -> ScheduleSpace:
    """The schedule space (family, block ids, components, applicability) of a transformer."""
    adapter = adapter or get_adapter(transformer)
    return ScheduleSpace(adapter.family, adapter.block_ids(transformer), adapter.components, adapter.applicable(transformer))


class _StepTrackerHook(ModelHook):
    """Transformer-level hook: derives (generation, step, branch) from the timestep argument."""

    def __init__(self, handle: CacheHandle, timestep_index: int | None) -> None:
        super().__init__()
        self.handle = handle
        self.timestep_index = timestep_index
        self.compiled: Any = None  # the compiled forward (`CacheHandle.compile`); the hook itself stays eager

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return (self.compiled or self.fn_ref.original_forward)(*args, **kwargs)

    def _timestep(self, args: tuple, kwargs: dict) -> float:
        t = kwargs.get(self.handle.adapter.timestep_arg)
        if t is None and self.timestep_index is not None and len(args) > self.timestep_index:
            t = args[self.timestep_index]
        if t is None:
            raise ScheduleError("the transformer was called without a timestep; dit-cache tracks steps from it")
        return float(t.flatten()[0]) if isinstance(t, torch.Tensor) else float(t)

    def pre_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        h, ctx = self.handle, self.handle.ctx
        if h.tracker.advance(ctx, lambda: self._timestep(args, kwargs)):
            h._begin_generation()
        elif ctx.step >= h.backend_steps():
            raise ScheduleError(
                f"the generation reached step {ctx.step + 1} but the schedule has {h.backend_steps()} steps: "
                "run the pipeline with the schedule's step count, or pass resample=True to accelerate() or BlockReuseConfig"
            )
        h._skip_until, h._gated_skips = -1, []
        h.backend.begin_call(ctx)
        if h._components:
            _plan_components(h)
        key = tuple(tuple(x.shape) for x in tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor))
        h.stats.begin_call(ctx.step, key, lambda: meta_like((args, kwargs)))
        return args, kwargs

    def post_forward(self, module: nn.Module, output: Any) -> Any:
        if self.handle.check_finite:
            out = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
            if isinstance(out, torch.Tensor) and not torch.isfinite(out).all():
                ctx = self.handle.ctx
                raise FloatingPointError(
                    f"non-finite transformer output at step {ctx.step} (branch {ctx.branch}); compare with the "
                    "uncached model: if it is finite there, the schedule reuses too aggressively"
                )
        h = self.handle
        if h._components:
            _commit_components(h)
        if h.block_level:  # the call's decision: did the backend skip any block?
            ctx = h.ctx
            h._log.append((ctx.generation, ctx.step, ctx.branch, h._skip_until >= 0))
        output = h.backend.end_call(h.ctx, output)
        overhead = h.backend.overhead_macs()
        if overhead:
            h.stats.record_overhead(overhead)
        h.tracker.close()
        return output


class _ComponentHook(ModelHook):
    """Component-level hook: compute (keeping the output for the backend), or return the planned value.

    The plan of a call (`compute`, `keep`, `value`) is set by the transformer-level hook before the call and the
    kept outputs are handed to the backend after it, so the hook reads three attributes and no step, block or
    cache index: a compiled block (`torch.compile(block, fullgraph=True)`) specialises on the decision pattern
    of its components only, never on the step."""

    def __init__(self, handle: CacheHandle, site: Site) -> None:
        super().__init__()
        self.site = site
        self.compute, self.keep = True, False
        self.value: Any = None  # the reused / forecast output when not computing
        self.out: Any = None  # this call's output, when kept

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self.compute:
            out = self.fn_ref.original_forward(*args, **kwargs)
            if self.keep:
                self.out = out
            return out
        return self.value


def _plan_components(h: CacheHandle) -> None:
    """Before a call: each component hook's decision, whether its output is kept, and its reused value; each
    residual block hook's (skip, keep) and the residual it adds."""
    b, ctx = h.backend, h.ctx
    for hook in h._components:
        c = b.should_compute(hook.site, ctx)
        hook.compute, hook.out = c, None
        hook.keep = c and b.keeps(hook.site, ctx)
        hook.value = None if c else b.reuse(hook.site, ctx)
    for blk in h._blocks:
        blk.skip, blk.keep = b.block_plan(blk.index, ctx)
        blk.residual = b.block_residual(blk.index, ctx) if blk.skip else None
        blk.delta = None


def _commit_components(h: CacheHandle) -> None:
    """After a call: hand the kept outputs to the backend; count computed and reused components."""
    b, ctx, stats = h.backend, h.ctx, h.stats
    gated = set(h._gated_skips)  # blocks a `gates_blocks` backend skipped: their components did not run
    for hook in h._components:
        site = hook.site
        if hook.keep and hook.out is not None:
            b.store(site, ctx, hook.out)
        stats.record(ctx.step, site.block, site.component, hook.compute and site.block not in gated)
        hook.out = hook.value = None
    for blk in gated:
        stats.record_skipped_block(blk)
    for blk in h._blocks:
        if blk.keep and blk.delta is not None:
            b.store_block(blk.index, ctx, blk.delta)
        if blk.skip:
            stats.record_skipped_block(blk.index)
        blk.delta = blk.residual = None


class _StreamIO:
    """A block's stream inputs (`Adapter.block_outputs` order) read from its call, and its outputs packed alike."""

    def __init__(self, names: tuple[str, ...], module: nn.Module) -> None:
        self.names = names
        params = list(inspect.signature(type(module).forward).parameters)[1:]
        self.pos = {n: params.index(n) for n in names if n in params}
        self.single = len(names) == 1

    def streams(self, args: tuple, kwargs: dict) -> tuple:
        """The block's stream inputs, in `Adapter.block_outputs` order."""
        out = []
        for n in self.names:
            if n in kwargs:
                out.append(kwargs[n])
            else:
                i = self.pos.get(n)
                out.append(args[i] if i is not None and i < len(args) else None)
        return tuple(out)

    def pack(self, streams: tuple) -> Any:
        """Streams as the block returns them."""
        return streams[0] if self.single else tuple(streams)

    def unpack(self, out: Any) -> tuple:
        """The block's return value as streams."""
        return (out,) if self.single else tuple(out)


class _ResidualBlockHook(ModelHook):
    """Block hook of a component-level backend that `reuses_blocks`: return input + residual, as planned for the
    call (`skip`, `keep`, `residual`, like the component hooks' plan), or run the block, keeping out − in."""

    def __init__(self, handle: CacheHandle, index: int, module: nn.Module) -> None:
        super().__init__()
        self.index = index
        self.io = _StreamIO(handle.adapter.block_outputs, module)
        self.skip, self.keep = False, False
        self.residual: Any = None  # streams added to the input when skipping
        self.delta: Any = None  # this call's out − in, when kept

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        streams = self.io.streams(args, kwargs)
        if self.skip:
            return self.io.pack(streams_add(streams, self.residual))
        out = self.fn_ref.original_forward(*args, **kwargs)
        if self.keep:
            self.delta = streams_sub(self.io.unpack(out), streams)
        return out


class _BlockHook(ModelHook):
    """Block-level hook: run the block, or skip it (first block of a skipped range returns the backend's value).
    Under a component-level backend that `gates_blocks` the component hooks count what ran; this hook only
    notes the blocks it skipped."""

    def __init__(self, handle: CacheHandle, index: int, module: nn.Module) -> None:
        super().__init__()
        self.handle = handle
        self.index = index
        self.backend = handle.backend
        self.stats = handle.stats
        self.io = _StreamIO(handle.adapter.block_outputs, module)
        self.compiled: Any = None  # the block's compiled forward (`CacheHandle.compile_blocks`); decisions stay eager

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        h, b = self.handle, self.index
        ctx = h.ctx
        if b <= h._skip_until:  # inside a skipped range: pass the streams through
            self._skipped(b)
            return self.io.pack(self.io.streams(args, kwargs))
        streams = self.io.streams(args, kwargs)
        plan = self.backend.block_pre(b, ctx, streams, (module, args, kwargs))
        if plan is not None:
            value, h._skip_until = plan
            self._skipped(b)
            return self.io.pack(value)
        out = (self.compiled or self.fn_ref.original_forward)(*args, **kwargs)
        self.backend.block_post(b, ctx, streams, self.io.unpack(out))
        if h.block_level:
            self.stats.record_block(ctx.step, b, True)
        return out

    def _skipped(self, b: int) -> None:
        h = self.handle
        if h.block_level:
            self.stats.record_block(h.ctx.step, b, False)
        else:
            h._gated_skips.append(b)


class CacheHandle:
    """Owns the hooks and all caching state of one accelerated transformer."""

    def __init__(self, transformer: nn.Module, backend: Backend, *, pipeline: Any = None,
                 adapter: Adapter | None = None, check_finite: bool = False) -> None:
        self.transformer = transformer
        self.pipeline = pipeline
        self.adapter = adapter or get_adapter(transformer)
        self.space = space_of(transformer, self.adapter)
        self.backend = backend
        self.check_finite = check_finite
        self.ctx = StepContext()
        self.tracker = StepTracker(pipeline)
        self.stats = CacheStats(self.space, self._cost)
        self._meta_model: nn.Module | None = None
        self._hooked: list[tuple[nn.Module, str, bool]] = []  # (module, hook name, registry created by us)
        self._skip_until = -1  # last block of the range a block-level backend skips in this call
        self._gated_skips: list[int] = []  # blocks a `gates_blocks` backend skipped in this call
        self.compiled_scope: str | None = None  # "model" or "blocks" after compile() / compile_blocks()
        self.block_level = backend.level == "block"
        self._log: list[tuple[int, int, int, bool]] = []  # (generation, step, branch, skipped) per call
        self._components: list[_ComponentHook] = []
        self._blocks: list[_ResidualBlockHook] = []  # block hooks of a component-level backend that reuses_blocks
        self._compiled: list[Any] = []  # blocks compiled in place, or hooks holding a compiled forward
        self._recompile_added = 0  # what compile() / compile_blocks() added to dynamo's recompile limit
        self._install()

    # -- install / remove --------------------------------------------------------------------
    def _register(self, module: nn.Module, hook: ModelHook, name: str) -> None:
        created = not hasattr(module, "_diffusers_hook")
        HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)
        self._hooked.append((module, name, created))

    def _install(self) -> None:
        t = self.transformer
        if hasattr(t, "_diffusers_hook") and t._diffusers_hook.get_hook(STEP_HOOK) is not None:
            raise RuntimeError("this transformer is already accelerated by dit-cache; call handle.remove() first")
        params = [p for p in inspect.signature(type(t).forward).parameters][1:]
        index = params.index(self.adapter.timestep_arg) if self.adapter.timestep_arg in params else None
        try:
            self._register(t, _StepTrackerHook(self, index), STEP_HOOK)
            if self.block_level:
                for i, block in enumerate(self.adapter.blocks(t)):
                    self._register(block, _BlockHook(self, i, block), BLOCK_HOOK)
            else:
                for site in self.adapter.sites(t):
                    hook = _ComponentHook(self, site)
                    self._register(site.module, hook, COMPONENT_HOOK)
                    self._components.append(hook)
                if self.backend.reuses_blocks and self.backend.gates_blocks:
                    raise ValueError(f"{type(self.backend).__name__} both reuses and gates blocks; a backend does one")
                for i, block in enumerate(self.adapter.blocks(t)):
                    if self.backend.reuses_blocks:
                        hook = _ResidualBlockHook(self, i, block)
                        self._register(block, hook, BLOCK_HOOK)
                        self._blocks.append(hook)
                    elif self.backend.gates_blocks:
                        self._register(block, _BlockHook(self, i, block), BLOCK_HOOK)
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        """Remove every hook and cached tensor; the model is as if never hooked."""
        for module, name, created in reversed(self._hooked):
            registry = module._diffusers_hook
            registry.remove_hook(name, recurse=False)
            if not registry.hooks:  # diffusers leaves the bound class forward behind as an instance attribute
                fwd = module.__dict__.get("forward")
                if fwd is not None and getattr(fwd, "__func__", None) is type(module).forward:
                    del module.__dict__["forward"]
                if created:
                    del module._diffusers_hook
        self._hooked.clear()
        self._components.clear()
        self._blocks.clear()
        for obj in self._compiled:  # undo compile() / compile_blocks()
            if isinstance(obj, nn.Module):
                obj._compiled_call_impl = None
            else:
                obj.compiled = None
        self._compiled.clear()
        self.compiled_scope = None
        if self._recompile_added:
            import torch._dynamo

            torch._dynamo.config.recompile_limit -= self._recompile_added
            self._recompile_added = 0
        self.backend.reset()
        self._log.clear()

    @property
    def decisions(self) -> list[dict[str, Any]]:
        """Per-call decisions of a dynamic backend since the last reset (empty for static schedules)."""
        keys = ("generation", "step", "branch", "skipped")
        return [dict(zip(keys, x)) for x in self._log]

    def compile(self, *, scope: str = "auto", fullgraph: bool = True, **compile_kwargs: Any) -> int:
        """`torch.compile` the hooked transformer (``fullgraph`` and kwargs go to `torch.compile`); `remove()`
        undoes it. Returns the number of graph patterns of the scope used (`compiled_scope` names it).

        ``scope="model"``: the whole transformer's forward, with the step tracker outside the compiled frame and
        the component hooks inside. The tracker plans each call eagerly (no host sync), so the compiled
        transformer specialises on the call's pattern of (computed, kept) components, never on the step: one
        graph per distinct step pattern of the schedule (FORA-N: 2 or 3). ``scope="blocks"``: `compile_blocks()`,
        one small graph per distinct per-block pattern. ``scope="auto"`` (default): the whole transformer unless
        the schedule has more than `MANY_STEP_PATTERNS` step patterns (then each pattern would recompile the
        whole model: a 7-pattern schedule compiled in 2.1-3.2x the unhooked time on CPU inductor) or the backend
        decides between blocks (block-level backends); then the blocks. Dynamo's recompile limit is raised by
        the graphs' count and lowered again by `remove()`."""
        if scope not in COMPILE_SCOPES:
            raise ValueError(f"compile(scope={scope!r}): scope is one of {', '.join(COMPILE_SCOPES)}")
        patterns = 1 if self.block_level else self.backend.compile_patterns(per="step")
        if scope == "auto":
            scope = "blocks" if self.block_level or patterns > MANY_STEP_PATTERNS else "model"
        if scope == "blocks":
            return self.compile_blocks(fullgraph=fullgraph, **compile_kwargs)  # (checks as below)
        self._check_not_compiled()
        self._refuse_gated()
        if self.block_level:
            raise RuntimeError(
                f"{type(self.backend).__name__} skips blocks by a decision taken between them, which a compiled "
                "transformer cannot hold: use compile(scope='blocks') (each block compiled, the decision eager)"
            )
        if patterns > MANY_STEP_PATTERNS:
            warnings.warn(
                f"this schedule has {patterns} distinct step patterns: compile(scope='model') compiles the whole "
                f"transformer once per pattern (on CPU inductor a 7-pattern schedule compiled in 2.1-3.2x the "
                f"unhooked time); scope='blocks' (the default 'auto' here) compiles small per-block graphs "
                f"({self.backend.compile_patterns()} block patterns) and is the cheaper choice", stacklevel=2)
        self._raise_recompile_limit(patterns + 1)
        hook = self.transformer._diffusers_hook.get_hook(STEP_HOOK)
        hook.compiled = torch.compile(hook.fn_ref.original_forward, fullgraph=fullgraph, **compile_kwargs)
        self._compiled.append(hook)
        self.compiled_scope = "model"
        return patterns

    def compile_blocks(self, *, fullgraph: bool = True, **compile_kwargs: Any) -> int:
        """`torch.compile` every block (``fullgraph`` and kwargs go to `torch.compile`); `remove()` undoes it.

        Component-level backends: each block is compiled in place (``block.compile()``, as
        `compile_repeated_blocks` does) with the component hooks inside. They read only their planned decision,
        so a block compiles once per distinct per-block pattern of (computed, kept) components — never per step;
        dynamo's recompile limit is raised by twice that count plus one (the first block's input layout) and
        lowered again by `remove()`. Block-level (dynamic) backends: each block's forward is compiled and the hook
        deciding whether to run it stays eager, outside the compiled frame, so the graphs do not depend on
        the decisions. Returns the pattern count (1 for a backend without a static plan)."""
        self._check_not_compiled()
        self._refuse_gated()
        patterns = self.backend.compile_patterns()
        self._raise_recompile_limit(2 * patterns + 1)
        self.compiled_scope = "blocks"
        for block in self.adapter.blocks(self.transformer):
            if self.block_level:
                hook = block._diffusers_hook.get_hook(BLOCK_HOOK)
                hook.compiled = torch.compile(hook.fn_ref.original_forward, fullgraph=fullgraph, **compile_kwargs)
                self._compiled.append(hook)
            else:
                block.compile(fullgraph=fullgraph, **compile_kwargs)
                self._compiled.append(block)
        return patterns

    def _check_not_compiled(self) -> None:
        if self._compiled:
            raise RuntimeError("this handle is already compiled (compile() or compile_blocks()); remove() it first")

    def _refuse_gated(self) -> None:
        if self.backend.gates_blocks:
            raise RuntimeError(
                f"{type(self.backend).__name__} decides between blocks whether a call runs (e.g. CFG-branch caching "
                "over a static schedule), which compile() / compile_blocks() do not support yet: compile the "
                "static schedule alone, or run this one eager")

    def _raise_recompile_limit(self, need: int) -> None:
        """Raise dynamo's per-code recompile limit by what this handle's graphs need (handles compiled side by
        side share the transformer's code objects, so each adds its own count); `remove()` takes it back."""
        import torch._dynamo

        torch._dynamo.config.recompile_limit += need
        self._recompile_added += need

    @property
    def active(self) -> bool:
        """True while the hooks are installed."""
        return bool(self._hooked)

    def __enter__(self) -> CacheHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # -- generation tracking -----------------------------------------------------------------
    def _begin_generation(self) -> None:
        self.stats.generations += 1
        self.backend.begin_generation(self.ctx)

    def backend_steps(self) -> int:
        """Step count the backend plans for (large for dynamic backends)."""
        n = self.backend.num_steps
        return 1 << 30 if n is None else n

    def reset(self) -> None:
        """Forget the current generation: the next transformer call starts a new one."""
        self.tracker.reset(self.ctx)
        self.backend.reset()
        self._log.clear()

    def snapshot(self) -> dict[str, Any]:
        """Step context and backend cache state now, to resume a generation later (prefix sharing)."""
        return {"ctx": dataclasses.replace(self.ctx), "backend": self.backend.snapshot()}

    def restore(self, snap: dict[str, Any]) -> None:
        """Resume from `snapshot()`: the next transformer call continues that generation."""
        self.ctx = dataclasses.replace(snap["ctx"])
        self.tracker.open = False
        self.backend.restore(snap["backend"])

    # -- accounting --------------------------------------------------------------------------
    def _cost(self, meta_inputs: Any, convention: str):
        if self._meta_model is None:
            self._meta_model = meta_model_of(self.transformer)
        args, kwargs = meta_inputs
        return step_cost(self._meta_model, args, kwargs, adapter=self.adapter, convention=convention)

    def __repr__(self) -> str:
        return f"CacheHandle({type(self.transformer).__name__}, backend={type(self.backend).__name__}, active={self.active})"


def _as_backend(spec: Any, transformer: nn.Module, space: ScheduleSpace, resample: bool, repair: bool) -> Backend:
    """Backend from a Schedule, a schedule/ECAD JSON path, a backend config, or a backend."""
    if isinstance(spec, (str, Path, Schedule)):
        return schedule_backend(spec, space, resample=resample, repair=repair)
    if isinstance(spec, BackendConfig):
        return spec.build_backend(space, transformer)
    if isinstance(spec, Backend):
        return spec
    raise TypeError(f"accelerate() takes a Schedule, a schedule file path or a backend config, not {type(spec).__name__}")


def accelerate(pipe_or_transformer: Any, schedule_or_config: Any, *, resample: bool = False,
               repair: bool = False, check_finite: bool = False) -> CacheHandle:
    """Install caching on a diffusers pipeline's transformer (or a bare transformer); returns the handle.

    ``schedule_or_config``: a `Schedule`, a path to a dit-cache or ECAD schedule JSON, or a backend config.
    ``resample``: adapt a schedule to the pipeline's step count instead of raising on a mismatch.
    ``repair``: accept schedule files that reuse on step 0 by computing those cells.
    ``check_finite``: raise on NaN/Inf transformer outputs (one reduction per call).
    """
    if isinstance(pipe_or_transformer, nn.Module) and not hasattr(pipe_or_transformer, "transformer"):
        pipeline, transformer = None, pipe_or_transformer
    else:
        pipeline, transformer = pipe_or_transformer, getattr(pipe_or_transformer, "transformer", None)
        if not isinstance(transformer, nn.Module):
            raise TypeError(
                f"{type(pipe_or_transformer).__name__} has no `transformer` module; pass a diffusers pipeline with "
                "a transformer (PixArt, DiT, FLUX, SD3, Wan, ...) or the transformer itself"
            )
    adapter = get_adapter(transformer)
    backend = _as_backend(schedule_or_config, transformer, space_of(transformer, adapter), resample, repair)
    return CacheHandle(transformer, backend, pipeline=pipeline, adapter=adapter, check_finite=check_finite)
