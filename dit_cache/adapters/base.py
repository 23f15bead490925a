"""Adapter: which modules of a transformer are its blocks and cacheable components."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

# Builds example forward kwargs (meta tensors) from a config: used to count MACs without weights.
ExampleInputs = Callable[["Mapping[str, Any]", "InputSpec"], dict]


@dataclass(frozen=True)
class InputSpec:
    """Shape of one transformer call: image size, effective batch (CFG included), text length."""

    height: int
    width: int
    batch: int = 2
    text_len: int | None = None  # None = the family's default
    num_frames: int = 1  # video families only
    vae_scale: int = 8


@dataclass(frozen=True)
class BlockGroup:
    """A ModuleList of blocks on the transformer and the components inside each block."""

    attr: str  # e.g. "transformer_blocks"
    components: Mapping[str, str]  # component name -> attribute path inside the block
    id_prefix: str = ""  # block ids are f"{id_prefix}{index}", e.g. "single_3"


@dataclass(frozen=True)
class Site:
    """One cacheable component: indices into a schedule and the module itself."""

    block: int
    component: int
    block_id: str
    name: str
    path: str  # dotted path from the transformer, e.g. "transformer_blocks.3.attn1"
    module: nn.Module


@dataclass(frozen=True)
class Adapter:
    """Maps a diffusers transformer class onto blocks x components."""

    family: str
    class_names: tuple[str, ...]  # transformer classes this adapter accepts (by class name)
    groups: tuple[BlockGroup, ...]
    example_inputs: ExampleInputs
    default_text_len: int = 120
    timestep_arg: str = "timestep"
    # Names of the block forward's stream arguments in the order the block returns them: a block that
    # returns one tensor has ("hidden_states",); MMDiT blocks return (encoder_hidden_states, hidden_states).
    block_outputs: tuple[str, ...] = ("hidden_states",)
    notes: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def components(self) -> tuple[str, ...]:
        """Union of component names over groups, in declaration order."""
        names: list[str] = []
        for g in self.groups:
            names += [c for c in g.components if c not in names]
        return tuple(names)

    def sites(self, transformer: nn.Module) -> list[Site]:
        """Every present component of every block, in schedule order."""
        comps = self.components
        sites: list[Site] = []
        b = 0
        for g in self.groups:
            blocks = getattr(transformer, g.attr, None)
            if blocks is None:
                raise TypeError(f"{type(transformer).__name__} has no attribute {g.attr!r} ({self.family} adapter)")
            for i, block in enumerate(blocks):
                for name, sub in g.components.items():
                    module = _get_submodule(block, sub)
                    if module is not None:
                        path = f"{g.attr}.{i}.{sub}"
                        sites.append(Site(b, comps.index(name), f"{g.id_prefix}{i}", name, path, module))
                b += 1
        return sites

    def block_ids(self, transformer: nn.Module) -> tuple[str, ...]:
        """Block ids in schedule order, e.g. ("0", ..., "18", "single_0", ...)."""
        return tuple(
            f"{g.id_prefix}{i}" for g in self.groups for i in range(len(getattr(transformer, g.attr)))
        )

    def block_paths(self, transformer: nn.Module) -> list[str]:
        """Dotted module path of each block, in schedule order."""
        return [f"{g.attr}.{i}" for g in self.groups for i in range(len(getattr(transformer, g.attr)))]

    def blocks(self, transformer: nn.Module) -> list[nn.Module]:
        """Block modules in schedule order."""
        return [b for g in self.groups for b in getattr(transformer, g.attr)]

    def applicable(self, transformer: nn.Module) -> np.ndarray:
        """Bool [blocks, components]: False where a block has no such component."""
        mask = np.zeros((len(self.block_ids(transformer)), len(self.components)), dtype=bool)
        for s in self.sites(transformer):
            mask[s.block, s.component] = True
        return mask

    def meta_model(self, config: Mapping[str, Any]) -> nn.Module:
        """Instantiate the transformer on the meta device from its config (no weights, no memory)."""
        import diffusers

        cls = getattr(diffusers, self.class_names[0])
        config = {k: v for k, v in dict(config).items() if not k.startswith("_")}
        with torch.device("meta"):
            return cls.from_config(config)


def _get_submodule(block: nn.Module, path: str) -> nn.Module | None:
    """block.<path> or None when the block lacks it (e.g. SD3's last block has no ff_context)."""
    obj: Any = block
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, nn.Module) else None


def meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An empty meta tensor: shapes only, for MAC counting."""
    return torch.empty(*shape, dtype=dtype, device="meta")


def latent_hw(spec: InputSpec) -> tuple[int, int]:
    """Latent height and width for an image size."""
    if spec.height % spec.vae_scale or spec.width % spec.vae_scale:
        raise ValueError(f"height/width ({spec.height}x{spec.width}) must be multiples of {spec.vae_scale}")
    return spec.height // spec.vae_scale, spec.width // spec.vae_scale
