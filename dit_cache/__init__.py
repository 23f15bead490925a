"""dit-cache: training-free caching and forecasting of diffusion-transformer features across steps.

    handle = dit_cache.accelerate(pipe, dit_cache.fora(dit_cache.space_of(pipe.transformer), 20, 2))
    images = pipe(prompt, num_inference_steps=20).images
    handle.remove()
"""

from .adapters import Adapter, BlockGroup, InputSpec, families, get_adapter, register_adapter
from .backends import Backend, BackendConfig, BlockBackend, StaticScheduleBackend
from .backends.block_reuse import BlockReuseConfig
from .backends.cfg_cache import CFGCacheConfig
from .backends.cg_taylor import CGTaylorConfig
from .backends.delta_dit import DeltaDiTConfig
from .backends.erta import ERTACacheConfig
from .backends.first_block import FirstBlockCacheConfig
from .backends.limits import SkipLimits
from .backends.magcache import MagCacheConfig
from .backends.taylorseer import TaylorSeerConfig
from .backends.teacache import TeaCacheConfig
from .ecad import from_ecad, load_ecad, save_ecad, to_ecad
from .macs import StepCost, schedule_macs, step_cost_from_config
from .resolve import (
    DEFAULT_BASELINES,
    SPEC_KINDS,
    Baseline,
    CacheSpec,
    LoadedModel,
    ModelSpec,
    baselines,
    load_pipeline,
    parse_model_spec,
    parse_spec,
    resolve_spec,
)
from .runtime import CacheHandle, accelerate, space_of
from .schedule import (
    COMPUTE,
    FORECAST,
    REUSE,
    Schedule,
    ScheduleError,
    ScheduleSpace,
    ScheduleWarning,
    cache_component,
    compute_all,
    fora,
    random_schedule,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    """`dit_cache.zoo` on first use (it imports diffusers pipelines; `import dit_cache` stays light)."""
    if name == "zoo":
        import importlib

        return importlib.import_module(".zoo", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "COMPUTE",
    "DEFAULT_BASELINES",
    "FORECAST",
    "REUSE",
    "SPEC_KINDS",
    "Adapter",
    "Backend",
    "BackendConfig",
    "Baseline",
    "BlockBackend",
    "BlockGroup",
    "BlockReuseConfig",
    "CFGCacheConfig",
    "CGTaylorConfig",
    "CacheHandle",
    "CacheSpec",
    "DeltaDiTConfig",
    "ERTACacheConfig",
    "FirstBlockCacheConfig",
    "InputSpec",
    "LoadedModel",
    "MagCacheConfig",
    "ModelSpec",
    "Schedule",
    "ScheduleError",
    "ScheduleSpace",
    "ScheduleWarning",
    "SkipLimits",
    "StaticScheduleBackend",
    "StepCost",
    "TaylorSeerConfig",
    "TeaCacheConfig",
    "accelerate",
    "baselines",
    "cache_component",
    "compute_all",
    "families",
    "fora",
    "from_ecad",
    "get_adapter",
    "load_ecad",
    "load_pipeline",
    "parse_model_spec",
    "parse_spec",
    "random_schedule",
    "register_adapter",
    "resolve_spec",
    "save_ecad",
    "schedule_macs",
    "space_of",
    "step_cost_from_config",
    "to_ecad",
]
