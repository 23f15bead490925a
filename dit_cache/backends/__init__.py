"""Caching backends: the only part that differs between caching methods."""

from .base import Backend, BlockBackend, StepContext
from .static import StaticScheduleBackend

__all__ = ["Backend", "BlockBackend", "StaticScheduleBackend", "StepContext"]
