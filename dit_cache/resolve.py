"""One grammar for what every command line names: the model (`--model`) and caching specs (`--schedules`, ...).

Models, `load_pipeline(spec)` -> `LoadedModel` (pipeline, its call defaults, family, canonical name):

    tiny                             the embedded trained PixArt, `dit_cache.zoo.load()`
    tiny-flux                        the embedded trained FLUX, `dit_cache.zoo.load("tiny-flux-shapes")`
    random-tiny[:FAMILY[:LAYERS]]    random-weight pipeline built offline (`dit_cache.zoo.tiny_random`);
                                     FAMILY pixart (default), dit, flux, sd3, wan; LAYERS = transformer blocks
    random-tiny:LAYERS               the older form, read as random-tiny:pixart:LAYERS
    PATH                             a local diffusers pipeline folder (with model_index.json)
    OWNER/NAME                       a hub id, `DiffusionPipeline.from_pretrained` (offline: the local cache)

Caching specs, `resolve_spec(text, space, steps)` -> `CacheSpec` (a `Schedule` or a backend config, and
its display name); empty fields take the default (``delta-dit:4::12``):

    all                                    compute everything (static)               compute-all
    fora:N[:WARMUP]                        FORA, every N-th step (static)            fora-3, fora-3-w2
    cache:COMPONENT:N                      one component every N steps (static)      cache-ff-2
    random:P[:SEED]                        random reuse with probability P (static)  random-p0.5-s0
    taylorseer[:N[:ORDER[:WARMUP]]]        TaylorSeerConfig                          taylorseer-4-o2-w2
    teacache[:DELTA[:PROFILE]]             TeaCacheConfig                            teacache-0.25
    first-block[:TAU]                      FirstBlockCacheConfig                     first-block-0.1
    delta-dit[:N[:BLOCKS[:BOUNDARY]]]      DeltaDiTConfig                            delta-dit-4-k6-b8
    cg-taylor[:TAU[:O1[:OL[:WARMUP]]]]     CGTaylorConfig                            cg-taylor-0.05-w2
    cfg-cache[:N[:WARMUP]]                 CFGCacheConfig (separate CFG calls)       cfg-cache-3-w1
    magcache:PROFILE[:DELTA[:K]]           MagCacheConfig (profile required)         magcache-PROFILE-0.1
    erta:PROFILE[:SELECT[:RES[:INT]]]      ERTACacheConfig (profile required)        erta-PROFILE
    block:STATIC-SPEC                      BlockReuseConfig: fully reused blocks     block-fora-4
                                           add their cached residual (all, fora,
                                           cache, random or FILE.json inside)
    STATIC-SPEC+cfg-cache[:N[:WARMUP]]     CFGCacheConfig(schedule=...): the calls   fora-3+cfg-cache-3
                                           that run follow the static schedule
    FILE.json                              dit-cache or ECAD schedule file           its name (or file stem)

PROFILE is a JSON file from `dit-cache profile` (or a key of the `profiles` mapping given to `resolve_spec`).
"""

from __future__ import annotations

import inspect
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .backends.block_reuse import BlockReuseConfig
from .backends.cfg_cache import CFGCacheConfig
from .backends.cg_taylor import CGTaylorConfig
from .backends.delta_dit import DeltaDiTConfig
from .backends.erta import ERTACacheConfig
from .backends.first_block import FirstBlockCacheConfig
from .backends.magcache import MagCacheConfig
from .backends.taylorseer import TaylorSeerConfig
from .backends.teacache import TeaCacheConfig
from .schedule import (
    Schedule,
    ScheduleError,
    ScheduleSpace,
    cache_component,
    compute_all,
    fora,
    random_schedule,
)

__all__ = [
    "DEFAULT_BASELINES",
    "MODEL_HELP",
    "SPEC_KINDS",
    "Baseline",
    "CacheSpec",
    "LoadedModel",
    "ModelSpec",
    "baseline_profiles",
    "baselines",
    "erta_reuse_points",
    "load_pipeline",
    "parse_model_spec",
    "parse_spec",
    "pipeline_defaults",
    "prompt_kwargs",
    "resolve_spec",
]

RANDOM_TINY = "random-tiny"
# the embedded trained models: --model name -> (zoo folder, adapter family); folders whose name starts with a zoo
# folder's name (retrained versions) are shapes models too
EMBEDDED = {"tiny": ("tiny-pixart-shapes", "pixart"), "tiny-flux": ("tiny-flux-shapes", "flux")}
SHAPES_PREFIXES = tuple(folder for folder, _ in EMBEDDED.values())
MODEL_FORMS = ("tiny", "tiny-flux", "random-tiny[:FAMILY[:LAYERS]]", "a pipeline folder", "a hub id")
MODEL_HELP = ("tiny (embedded trained PixArt, the default), tiny-flux (embedded trained FLUX), "
              "random-tiny[:FAMILY[:LAYERS]] (random weights, plumbing only; FAMILY pixart, flux, sd3, wan or dit), "
              "or a pipeline folder / hub id of a PixArt, FLUX, SD3, Wan2.1 or DiT pipeline")


# ============================================================================= models
@dataclass(frozen=True)
class ModelSpec:
    """A parsed `--model` value (nothing loaded yet)."""

    text: str  # as given
    kind: str  # "tiny" (an embedded model) | "random-tiny" | "folder" | "hub"
    name: str  # canonical: "tiny", "tiny-flux", "random-tiny:pixart:4", the folder path, the hub id
    family: str | None = None  # known before loading for tiny and random-tiny
    layers: int | None = None  # random-tiny only

    @property
    def shapes(self) -> bool:
        """An embedded shapes model (or a folder of one): shapes prompts, adherence and shapes-FID apply."""
        return self.kind == "tiny" or (self.kind == "folder" and Path(self.name).name.startswith(SHAPES_PREFIXES))

    @property
    def zoo_name(self) -> str | None:
        """The zoo folder name of an embedded model ("tiny-pixart-shapes", "tiny-flux-shapes"), else None."""
        return EMBEDDED[self.name][0] if self.kind == "tiny" else None

    @property
    def random_weights(self) -> bool:
        """Random weights: quality numbers exercise the plumbing only."""
        return self.kind == RANDOM_TINY


def _random_tiny(text: str) -> ModelSpec:
    from .zoo.tiny_random import DEFAULT_LAYERS, FAMILIES

    parts = text.split(":")[1:]
    usage = (f"expected random-tiny[:FAMILY[:LAYERS]] with FAMILY one of {', '.join(FAMILIES)} and LAYERS an "
             "integer >= 1 (random-tiny:LAYERS = random-tiny:pixart:LAYERS)")
    if len(parts) > 2 or any(not p for p in parts):
        raise ValueError(f"bad model spec {text!r}: {usage}")
    family, layers = "pixart", None
    if len(parts) == 1 and parts[0].lstrip("-").isdigit():  # the older layer-count form
        layers = parts[0]
    elif parts:
        family = parts[0]
        layers = parts[1] if len(parts) > 1 else None
    if family not in FAMILIES:
        raise ValueError(f"bad model spec {text!r}: unknown random-tiny family {family!r}; {usage}")
    try:
        n = DEFAULT_LAYERS[family] if layers is None else int(layers)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"bad model spec {text!r}: LAYERS must be an integer >= 1, got {layers!r}; {usage}")
    return ModelSpec(text, RANDOM_TINY, f"{RANDOM_TINY}:{family}:{n}", family, n)


def parse_model_spec(spec: str | ModelSpec) -> ModelSpec:
    """Parse a `--model` value: tiny, tiny-flux, random-tiny[:FAMILY[:LAYERS]], a pipeline folder or a hub id."""
    if isinstance(spec, ModelSpec):
        return spec
    text = str(spec).strip()
    if not text:
        raise ValueError(f"empty model spec; pass one of: {', '.join(MODEL_FORMS)}")
    if text in EMBEDDED:
        return ModelSpec(text, "tiny", text, EMBEDDED[text][1])
    if text == RANDOM_TINY or text.startswith(RANDOM_TINY + ":"):
        return _random_tiny(text)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ValueError(f"model folder {text!r} has no model_index.json: pass a diffusers pipeline folder "
                             "(`pipe.save_pretrained(folder)`), or one of: " + ", ".join(MODEL_FORMS))
        return ModelSpec(text, "folder", str(path))
    return ModelSpec(text, "hub", text)


@dataclass
class LoadedModel:
    """A loaded pipeline with the keyword arguments every call of it should get (no prompt or generator)."""

    pipe: Any
    call_defaults: dict[str, Any]
    family: str | None  # the adapter family of its transformer (None: no registered adapter)
    name: str  # canonical model spec
    spec: ModelSpec

    @property
    def shapes(self) -> bool:
        return self.spec.shapes

    @property
    def random_weights(self) -> bool:
        return self.spec.random_weights

    def call_kwargs(self, steps: int | None = None, guidance_scale: float | None = None, height: int | None = None,
                    width: int | None = None, **extra: Any) -> dict[str, Any]:
        """The call defaults with overrides (None keeps the default): steps, guidance, size, anything else."""
        kw = dict(self.call_defaults)
        cfg_kwarg = getattr(self.pipe, "GUIDANCE_KWARG", "guidance_scale")  # tiny-flux: true_cfg_scale
        for key, value in (("num_inference_steps", steps), (cfg_kwarg, guidance_scale), ("height", height),
                           ("width", width)):
            if value is not None:
                kw[key] = value
        kw.update(extra)
        return kw

    def calls(self, prompts: Sequence[str], seed: int = 0, output_type: str = "latent",
              **overrides: Any) -> list[dict[str, Any]]:
        """Full keyword arguments of one call per prompt (generator seed + i), e.g. for `dit-cache profile`."""
        base = self.call_kwargs(**overrides)
        return [{**base, **prompt_kwargs(self.pipe, p), "output_type": output_type,
                 "generator": torch.Generator("cpu").manual_seed(seed + i)} for i, p in enumerate(prompts)]


def prompt_kwargs(pipe: Any, prompts: str | Sequence[str]) -> dict[str, Any]:
    """{"prompt": prompts}, or for class-conditional pipelines (DiT) {"class_labels": ids}: a prompt is a label
    name of the pipeline, an integer class id, or any other text, mapped to a fixed id (crc32 mod #labels)."""
    params = inspect.signature(type(pipe).__call__).parameters
    if "prompt" in params or "class_labels" not in params:
        return {"prompt": prompts}
    labels: dict[str, int] = dict(getattr(pipe, "labels", None) or {})
    n = len(set(labels.values())) or 1000

    def class_id(p: Any) -> int:
        if isinstance(p, int) or (isinstance(p, str) and p.strip().isdigit()):
            return int(p)
        return labels[p] if p in labels else zlib.crc32(str(p).encode()) % n

    return {"class_labels": [class_id(p) for p in ([prompts] if isinstance(prompts, (str, int)) else prompts)]}


def pipeline_defaults(pipe: Any) -> dict[str, Any]:
    """Defaults for a folder / hub pipeline: 20 steps; no aspect-ratio binning or bs4 caption cleaning."""
    params = inspect.signature(type(pipe).__call__).parameters
    kw: dict[str, Any] = {"num_inference_steps": 20} if "num_inference_steps" in params else {}
    kw.update({k: False for k in ("use_resolution_binning", "clean_caption") if k in params})
    return kw


def call_defaults(spec: str | ModelSpec, pipe: Any) -> dict[str, Any]:
    """The call defaults of the model `spec` names, for its already loaded pipeline `pipe` (what
    `load_pipeline(spec).call_defaults` gives, without loading again)."""
    ms = parse_model_spec(spec)
    if ms.kind == "tiny" or ms.shapes:
        return dict(getattr(pipe, "CALL_DEFAULTS", None) or pipeline_defaults(pipe))
    if ms.kind == RANDOM_TINY:
        from .zoo.tiny_random import tiny_call_defaults

        return tiny_call_defaults(ms.family)
    return pipeline_defaults(pipe)


def _load(ms: ModelSpec, device: str, dtype: torch.dtype) -> tuple[Any, dict[str, Any]]:
    if ms.kind == "tiny" or ms.shapes:
        from . import zoo

        try:
            pipe = zoo.load(ms.name if ms.kind == "folder" else ms.zoo_name, device=device, dtype=dtype)
        except FileNotFoundError as e:
            raise RuntimeError(f"the embedded model {ms.text!r} is not installed ({e}); use --model random-tiny for "
                               "a random-weight model (plumbing only) or pass a local pipeline folder") from None
        return pipe, dict(pipe.CALL_DEFAULTS)
    if ms.kind == RANDOM_TINY:
        from diffusers.utils import logging as dlog

        from .zoo.tiny_random import build_tiny_pipeline, tiny_call_defaults

        dlog.get_logger("diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha").setLevel("ERROR")  # T5 truncation
        pipe = build_tiny_pipeline(ms.family, num_layers=ms.layers)
        if torch.device(device).type != "cpu" or dtype != torch.float32:
            pipe = pipe.to(device=device, dtype=dtype)
        return pipe, tiny_call_defaults(ms.family)
    from diffusers import DiffusionPipeline

    try:
        pipe = DiffusionPipeline.from_pretrained(ms.name, torch_dtype=dtype)
    except Exception as e:  # hub client errors vary offline
        where = "the pipeline folder" if ms.kind == "folder" else "a hub id (offline: only the local cache is read)"
        raise RuntimeError(f"could not load {ms.text!r} as {where}: {type(e).__name__}: {str(e)[:300]}. Pass one "
                           f"of: {', '.join(MODEL_FORMS)}; for a hub id, download it first (unset HF_HUB_OFFLINE) "
                           "or pass its local folder") from None
    pipe.set_progress_bar_config(disable=True)
    if torch.device(device).type != "cpu":
        pipe = pipe.to(device)
    return pipe, pipeline_defaults(pipe)


def load_pipeline(spec: str | ModelSpec, device: str = "cpu", dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load what a `--model` value names, with its call defaults (see the module docstring for the grammar)."""
    ms = parse_model_spec(spec)
    pipe, defaults = _load(ms, device, dtype)
    family = ms.family
    if family is None:
        from .adapters import get_adapter

        try:
            family = get_adapter(pipe.transformer).family
        except Exception:  # no transformer, or no adapter for it: `accelerate` explains when it is called
            family = None
    return LoadedModel(pipe, defaults, family, ms.name, ms)


# ============================================================================= caching specs
_REQUIRED = object()


class _Field(NamedTuple):
    name: str  # generator argument / config field
    usage: str  # placeholder in the usage text
    parse: Callable[[str], Any]
    default: Any = _REQUIRED
    label: str = ""  # display-name prefix when not the default ("" = shown bare)


def _number(cast: type, what: str) -> Callable[[str], Any]:
    def parse(s: str) -> Any:
        try:
            return cast(s)
        except ValueError:
            raise ValueError(f"{s!r} is not {what}") from None

    return parse


_INT, _FLOAT = _number(int, "an integer"), _number(float, "a number")


def _bool(s: str) -> bool:
    low = s.lower()
    if low in ("1", "on", "true", "yes"):
        return True
    if low in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"{s!r} is not on/off (1/0, true/false)")


def _select(s: str) -> str:
    if s not in ("profile", "uniform"):
        raise ValueError(f"{s!r} is not profile or uniform")
    return s


@dataclass(frozen=True)
class _Kind:
    name: str
    fields: tuple[_Field, ...]
    build: Callable[..., Any]  # (args, space, steps) -> Schedule | backend config
    static: bool = False

    @property
    def usage(self) -> str:
        req = [f for f in self.fields if f.default is _REQUIRED]
        opt = [f for f in self.fields if f.default is not _REQUIRED]
        return self.name + "".join(f":{f.usage}" for f in req) + "".join(f"[:{f.usage}" for f in opt) + "]" * len(opt)


_KINDS: dict[str, _Kind] = {k.name: k for k in (
    _Kind("all", (), lambda a, sp, n: compute_all(sp, n), static=True),
    _Kind("fora", (_Field("interval", "N", _INT), _Field("warmup", "WARMUP", _INT, 0)),
          lambda a, sp, n: fora(sp, n, a["interval"], a["warmup"]), static=True),
    _Kind("cache", (_Field("component", "COMPONENT", str), _Field("interval", "N", _INT)),
          lambda a, sp, n: cache_component(sp, n, a["component"], a["interval"]), static=True),
    _Kind("random", (_Field("p", "P", _FLOAT), _Field("seed", "SEED", _INT, 0)),
          lambda a, sp, n: random_schedule(sp, n, a["p"], a["seed"]), static=True),
    _Kind("taylorseer", (_Field("interval", "N", _INT, 5), _Field("order", "ORDER", _INT, 1, "o"),
                         _Field("warmup", "WARMUP", _INT, 3, "w")), lambda a, sp, n: TaylorSeerConfig(**a)),
    _Kind("teacache", (_Field("threshold", "DELTA", _FLOAT, 0.25), _Field("profile", "PROFILE", str, None)),
          lambda a, sp, n: TeaCacheConfig(**a)),
    _Kind("first-block", (_Field("threshold", "TAU", _FLOAT, 0.05),), lambda a, sp, n: FirstBlockCacheConfig(**a)),
    _Kind("delta-dit", (_Field("interval", "N", _INT, 2), _Field("num_blocks", "BLOCKS", _INT, None, "k"),
                        _Field("boundary_step", "BOUNDARY", _INT, 12, "b")), lambda a, sp, n: DeltaDiTConfig(**a)),
    _Kind("cg-taylor", (_Field("threshold", "TAU", _FLOAT, 0.05), _Field("order_first", "O1", _INT, 1, "of"),
                        _Field("order_last", "OL", _INT, 1, "ol"), _Field("warmup", "WARMUP", _INT, 3, "w")),
          lambda a, sp, n: CGTaylorConfig(**a)),
    _Kind("cfg-cache", (_Field("interval", "N", _INT, 2), _Field("warmup", "WARMUP", _INT, 2, "w")),
          lambda a, sp, n: CFGCacheConfig(**a)),
    _Kind("magcache", (_Field("profile", "PROFILE", str), _Field("threshold", "DELTA", _FLOAT, 0.06),
                       _Field("max_skip_steps", "K", _INT, 3, "k")), lambda a, sp, n: MagCacheConfig(**a)),
    _Kind("erta", (_Field("profile", "PROFILE", str), _Field("select", "SELECT", _select, "profile"),
                   _Field("residual_correction", "RES", _bool, True, "res"),
                   _Field("interval_correction", "INT", _bool, True, "int")), lambda a, sp, n: ERTACacheConfig(**a)),
)}
SPEC_KINDS: tuple[str, ...] = (*(k.usage for k in _KINDS.values()), "block:STATIC-SPEC", "STATIC-SPEC+cfg-cache",
                                "FILE.json")


def _kinds_help() -> str:
    return "kinds: " + ", ".join(SPEC_KINDS)


@dataclass(frozen=True)
class CacheSpec:
    """A resolved caching spec: what `dit_cache.accelerate` takes, and the row label for it."""

    text: str  # as given
    kind: str  # a key of the grammar ("fora", "teacache", ...) or "file"
    name: str  # canonical display name, e.g. fora-3, teacache-0.25
    value: Any  # a Schedule (static kinds, files) or a backend config

    @property
    def static(self) -> bool:
        return isinstance(self.value, Schedule)


def _display(kind: _Kind, args: dict[str, Any], given: dict[str, str]) -> str:
    parts = [kind.name]
    for i, f in enumerate(kind.fields):
        v = args[f.name]
        if v is None or (i and v == f.default):
            continue
        if f.name == "profile":
            text = given[f.name] if given.get(f.name) else str(v)
            parts.append(Path(text).stem if text.endswith(".json") else text)
        elif isinstance(v, bool):
            parts.append(f.label if v else f"no-{f.label}")
        else:
            parts.append(f"{f.label}{v:g}" if isinstance(v, float) else f"{f.label}{v}")
    return "-".join(parts)


def _bad(text: str, why: str) -> ScheduleError:
    return ScheduleError(f"bad schedule spec {text!r}: {why}; {_kinds_help()}")


def _parse_args(text: str, kind: _Kind, parts: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    if len(parts) > len(kind.fields):
        raise _bad(text, f"{kind.name} takes at most {len(kind.fields)} field(s): {kind.usage}")
    args, given = {}, {}
    for i, f in enumerate(kind.fields):
        raw = parts[i] if i < len(parts) else ""
        if raw == "":
            if f.default is _REQUIRED:
                raise _bad(text, f"{kind.name} needs {f.usage}: {kind.usage}")
            args[f.name] = f.default
            continue
        try:
            args[f.name] = f.parse(raw)
        except ValueError as e:
            raise _bad(text, f"{f.usage} {e}: {kind.usage}") from None
        given[f.name] = raw
    return args, given


def _profile(text: str, kind: str, value: str, profiles: Mapping[str, Any] | None) -> Any:
    if profiles and value in profiles:
        return profiles[value]
    if not Path(value).is_file():
        raise ScheduleError(f"bad schedule spec {text!r}: profile file not found: {value} (make one with "
                            f"`dit-cache profile --backend {kind} --model ... --prompts ... -o {value}`)")
    return value


def _from_file(text: str, space: ScheduleSpace | None, steps: int | None, resample: bool, repair: bool) -> CacheSpec:
    from .ecad import load_schedule_file

    path = Path(text)
    if not path.is_file():
        raise ScheduleError(f"schedule file not found: {text} (or use a spec such as fora:2; {_kinds_help()})")
    try:
        sched = load_schedule_file(path, repair=repair)
    except ScheduleError:
        import json

        from .backends.profiles import FORMAT

        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict) and data.get("format") == FORMAT:
            backend = data.get("backend")
            use = {"erta": f"erta:{text}", "magcache": f"magcache:{text}"}.get(backend, f"teacache:DELTA:{text}")
            raise ScheduleError(f"{text} is a {backend} profile, not a schedule: use the spec {use}") from None
        raise
    if space is not None:
        why = sched.space.describe_mismatch(space)
        if why:
            raise ScheduleError(f"{path}: schedule does not fit this model: {why}")
    if steps is not None and sched.steps != steps:
        if not resample:
            raise ScheduleError(f"{path} has {sched.steps} steps but --steps is {steps}; pass --steps "
                                f"{sched.steps} or --resample")
        sched = sched.resample(steps)
    if sched.name == "unnamed":
        sched = sched.with_metadata(name=path.stem)
    return CacheSpec(text, "file", sched.name, sched)


def _block_spec(text: str, inner: str, space: ScheduleSpace | None, steps: int | None, resample: bool,
                repair: bool) -> CacheSpec:
    """``block:SPEC``: the static schedule SPEC with block-residual reuse (`BlockReuseConfig`)."""
    if not inner:
        raise _bad(text, "block: wraps a static spec, e.g. block:fora:4 or block:front_03.json")
    got = resolve_spec(inner, space, steps, resample=resample, repair=repair)
    if not isinstance(got.value, Schedule):
        raise _bad(text, f"{inner!r} is not a static schedule; block: wraps all, fora, cache, random or a schedule file")
    return CacheSpec(text, "block", f"block-{got.name}", BlockReuseConfig(got.value, resample=resample))


def _cfg_over(text: str, space: ScheduleSpace | None, steps: int | None, resample: bool, repair: bool,
              profiles: Mapping[str, Any] | None) -> CacheSpec:
    """``STATIC-SPEC+cfg-cache[:N[:WARMUP]]``: CFG-branch caching over a static schedule."""
    left, _, right = text.rpartition("+")
    if not left or not right.startswith("cfg-cache"):
        raise _bad(text, "+ joins a static spec and cfg-cache, e.g. fora:3+cfg-cache:2 or learned-3.81x.json+cfg-cache")
    gate = resolve_spec(right, space, steps, resample=resample, repair=repair, profiles=profiles)
    inner = resolve_spec(left, space, steps, resample=resample, repair=repair, profiles=profiles)
    if not isinstance(inner.value, Schedule):
        raise _bad(text, f"{left!r} is not a static schedule; cfg-cache combines with all, fora, cache, random or a "
                         "schedule file")
    value = replace(gate.value, schedule=inner.value, resample=resample)
    return CacheSpec(text, "cfg-cache", f"{inner.name}+{gate.name}", value)


def resolve_spec(text: str, space: ScheduleSpace | None = None, steps: int | None = None, *, resample: bool = False,
                 repair: bool = False, profiles: Mapping[str, Any] | None = None) -> CacheSpec:
    """A caching spec (see the module docstring) as a `Schedule` or backend config, with its display name.

    Static kinds need the model's schedule `space` and `steps`; files are checked against both when given
    (`resample` adapts a file's step count, `repair` computes reuse cells on step 0). `profiles` maps names to
    profile dicts or paths, so specs can name in-memory profiles (``erta:reuse6``)."""
    text = str(text).strip()
    if "+" in text and not Path(text).is_file():
        return _cfg_over(text, space, steps, resample, repair, profiles)
    head, _, rest = text.partition(":")
    if head == "block":
        return _block_spec(text, rest, space, steps, resample, repair)
    kind = _KINDS.get(head)
    if kind is None or (Path(text).is_file() and not rest):
        if kind is None and not Path(text).is_file() and not text.endswith(".json") and "/" not in text:
            hint = head.replace("_", "-")
            why = f"did you mean {hint}?" if hint in _KINDS else f"unknown kind {head!r}"
            raise _bad(text, why)
        return _from_file(text, space, steps, resample, repair)
    args, given = _parse_args(text, kind, rest.split(":") if rest else [])
    if "profile" in args and args["profile"] is not None:
        args["profile"] = _profile(text, kind.name, args["profile"], profiles)
    if kind.static and (space is None or steps is None):
        raise ValueError(f"schedule spec {text!r} is static: resolving it needs the model's schedule space and steps")
    try:
        value = kind.build(args, space, steps)
    except ScheduleError as e:
        raise ScheduleError(f"bad schedule spec {text!r}: {e}") from None
    except (ValueError, TypeError) as e:
        raise _bad(text, str(e)) from None
    name = value.name if kind.static else _display(kind, args, given)
    return CacheSpec(text, kind.name, name, value)


def parse_spec(text: str, space: ScheduleSpace | None = None, steps: int | None = None, **kwargs: Any) -> Any:
    """The `Schedule` or backend config a spec names (`resolve_spec(...).value`)."""
    return resolve_spec(text, space, steps, **kwargs).value


# ============================================================================= baselines
@dataclass(frozen=True)
class Baseline:
    """A named operating point of a baseline: backend family and spec."""

    backend: str  # fora, taylorseer, delta-dit, first-block, teacache, cg-taylor, erta
    spec: str


# Each dynamic backend at its config defaults (`python -m search.validate --dynamic defaults`).
DEFAULT_BASELINES: tuple[Baseline, ...] = tuple(
    Baseline(k, k) for k in ("teacache", "first-block", "taylorseer", "delta-dit", "cg-taylor"))


def erta_reuse_points(steps: int) -> dict[int, int]:
    """ERTACache operating points {reuse steps: most in a row}: about 1.4x, 2x, 3x MACs speedup at 20 steps."""
    return {6: 1, 10: 2, 13: 3} if steps >= 20 else {max(1, steps // 4): 1, max(1, steps // 2): 2}


def calls_per_step(pipe: Any, call: Mapping[str, Any]) -> int:
    """Transformer calls per denoising step of the pipeline call `call` (measured on a 2-step run): 2 where the
    CFG branches are separate calls (FLUX true CFG, Wan), 1 for batched CFG or none."""
    calls = [0]
    hook = pipe.transformer.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        with torch.no_grad():
            pipe(**{**call, "num_inference_steps": 2, "output_type": "latent"})
    finally:
        hook.remove()
    return max(1, calls[0] // 2)


def baselines(steps: int, num_blocks: int, *, profiled: bool = True, separate_cfg: bool = False) -> list[Baseline]:
    """FORA N=2,3,4 and every dynamic backend at >= 3 operating points (~1.3x to ~4x MACs speedup); with
    `separate_cfg` (the pipeline makes separate cond / uncond calls, `calls_per_step` 2) also CFG-branch caching.

    The TeaCache, MagCache and ERTACache points (`profiled`) name their profiles: ``calib`` (TeaCache), ``mag``
    (MagCache) and ``reuseK`` (ERTACache with K reuse steps, `erta_reuse_points`), made by `baseline_profiles`;
    pass them to `resolve_spec(profiles=...)`."""
    b = max(1, round(0.6 * steps))
    k = max(1, 3 * num_blocks // 4)
    specs = [f"fora:{n}" for n in (2, 3, 4)]
    specs += [f"taylorseer:{n}:{o}:2" for n, o in ((2, 1), (3, 1), (4, 2), (6, 1))]
    specs += [f"delta-dit:{n}::{b}" for n in (2, 3, 4)] + [f"delta-dit:4:{k}:{b}"]
    specs += [f"first-block:{t}" for t in (0.05, 0.1, 0.2, 0.4)]
    if profiled:
        specs += [f"teacache:{t}:calib" for t in (0.1, 0.25, 0.5, 1.0)]
    specs += [f"cg-taylor:{t}:1:1:2" for t in (0.02, 0.05, 0.1, 0.2)]
    if profiled:
        specs += [f"magcache:mag:{t}" for t in (0.06, 0.12, 0.25)] + ["magcache:mag:0.5:4"]
        specs += [f"erta:reuse{n}" for n in erta_reuse_points(steps)]
    if separate_cfg:
        specs += [f"cfg-cache:{n}:2" for n in (2, 3, 5)]
    return [Baseline(s.partition(":")[0], s) for s in specs]


def baseline_profiles(pipe: Any, calls: Sequence[dict], steps: int, model: str = "") -> dict[str, Any]:
    """The profiles `baselines` names, fitted on uncached runs of `calls` (calibration prompts): ``calib``
    (TeaCache), ``mag`` (MagCache) and ``reuseK`` (ERTACache with K reuse steps)."""
    from .backends.erta_profile import profile_erta
    from .backends.magcache import calibrate_magcache
    from .backends.teacache import calibrate_teacache

    profiles: dict[str, Any] = {"calib": calibrate_teacache(pipe, calls, model=model),
                                "mag": calibrate_magcache(pipe, calls, model=model)}
    errors = None  # per-step reuse errors: measured once, shared by every reuse budget
    for k, m in erta_reuse_points(steps).items():
        prof = profile_erta(pipe, calls, num_reuse=k, max_consecutive=m, step_errors=errors, model=model)
        profiles[f"reuse{k}"], errors = prof, prof["step_errors"]
    return profiles
