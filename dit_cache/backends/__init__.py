"""Caching backends: the only part that differs between caching methods."""

from .base import Backend, StepContext
from .static import StaticScheduleBackend

__all__ = ["Backend", "StaticScheduleBackend", "StepContext"]
