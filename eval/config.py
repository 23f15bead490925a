"""Settings of one `dit-cache eval` run, shared by `eval.cli` (which fills them) and `eval.score` (which reports them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class EvalConfig:
    """Settings of one `dit-cache eval` run (see `eval.cli.register` for the meaning of each)."""

    model: str = "tiny"
    schedules: list[str] = field(default_factory=lambda: ["fora:2", "fora:3"])
    prompts: str | None = None
    category: str | None = None
    num_prompts: int = 16
    seeds: int = 1
    seed: int = 0
    steps: int = 20
    guidance_scale: float | None = None
    height: int | None = None
    width: int | None = None
    metrics: str = "auto"
    out: Path = Path("eval_out")
    batch_size: int = 4
    resample: bool = False
    fid_features: str = "auto"
    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = "openai"
    latency_warmup: int = 1
    latency_repeats: int = 3
    latency_batch: int = 1
    grid_rows: int = 8
    device: str | None = None
    dtype: str = "float32"
    threads: int | None = None
    progress: bool = True
