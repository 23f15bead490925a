"""Caching backends: the only part that differs between caching methods (one technique per file).

`base.Backend` is the contract (every call the runtime makes); `base.BackendConfig` is what users pass
to `dit_cache.accelerate`. Static schedules run on `static.StaticScheduleBackend` (ECAD semantics), or on
`block_reuse.BlockReuseBackend`, where a block whose every component is reused skips all of its work.
"""

from .base import Backend, BackendConfig, BlockBackend, StepContext
from .static import StaticScheduleBackend

__all__ = ["Backend", "BackendConfig", "BlockBackend", "StaticScheduleBackend", "StepContext"]
