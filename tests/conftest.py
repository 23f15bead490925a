"""Shared fixtures: paths to the shared reference data and small schedule spaces."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = Path(__file__).parent / "data"


@pytest.fixture
def shared() -> Path:
    """../shared beside the repo (prompts, ECAD schedules); skip if absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not beside the repository")
    return SHARED


@pytest.fixture
def pixart_space():
    """Schedule space of a 4-block PixArt transformer."""
    from dit_cache import ScheduleSpace

    return ScheduleSpace("pixart", tuple(str(i) for i in range(4)), ("attn1", "attn2", "ff"), np.ones((4, 3), bool))


@pytest.fixture
def flux_space():
    """Schedule space of a FLUX transformer with 2 double and 2 single blocks."""
    from dit_cache import ScheduleSpace, get_adapter

    comps = get_adapter("flux").components
    app = np.array([[c.startswith("full") for c in comps]] * 2 + [[c.startswith("single") for c in comps]] * 2)
    return ScheduleSpace("flux", ("0", "1", "single_0", "single_1"), comps, app)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models run fastest single-threaded, and stay fast when the other core is busy."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
