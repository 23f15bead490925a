"""`dit-cache` command line: thin wrappers that parse arguments, call the library and print."""

from __future__ import annotations

import argparse
import json
import re
import sys

import numpy as np

from .io import check_out_file, nonnegative_int, positive_int
from .resolve import MODEL_HELP

DESCRIPTION = """\
dit-cache: make diffusion transformers faster by caching block features across denoising steps.

Commands from the runtime (macs, schedule) are built in; the eval and search packages add theirs
(demo, ...) through the `dit_cache.commands` entry point group. Run `dit-cache <command> --help`."""

PLUGIN_GROUP = "dit_cache.commands"


class CliParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line (`error: --steps must be >= 1, got 0 (see ...)`), exit 2;
    subcommand parsers inherit it."""

    def error(self, message: str):
        message = re.sub(r"^argument (\S+): (must be|expected)", r"\1 \2", " ".join(message.split()))
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _add_plugin_commands(sub) -> None:
    """Let installed packages add subcommands: each entry point is `register(subparsers)`."""
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            register = ep.load()
        except (ImportError, AttributeError) as e:  # a broken or partial install must not break the CLI
            print(f"dit-cache: command group {ep.name!r} ({ep.value}) is unavailable: {e}", file=sys.stderr)
            continue
        register(sub)


def _space_from_args(args: argparse.Namespace):
    """Schedule space from --family and --config."""
    from .adapters import get_adapter
    from .macs import load_transformer_config
    from .runtime import space_of

    adapter = get_adapter(args.family)
    config = load_transformer_config(args.config, args.family)
    return space_of(adapter.meta_model(config), adapter), config


def _load_any_schedule(path: str, repair: bool = False):
    """A dit-cache or ECAD schedule file."""
    from .ecad import load_schedule_file

    return load_schedule_file(path, repair=repair)


# -- macs ---------------------------------------------------------------------------------------
def cmd_macs(args: argparse.Namespace) -> int:
    """Print MACs per step and in total for a config, optionally under a schedule."""
    from .adapters import InputSpec
    from .macs import schedule_macs, step_cost_from_config
    from .schedule import compute_all

    space, config = _space_from_args(args)
    spec = InputSpec(args.height, args.width, batch=args.batch, text_len=args.text_len, num_frames=args.num_frames)
    cost = step_cost_from_config(args.family, config, spec, args.convention)
    if args.schedule:
        schedule = _load_any_schedule(args.schedule)
        why = schedule.space.describe_mismatch(space)
        if why:
            print(f"error: schedule does not fit this config: {why}", file=sys.stderr)
            return 2
        if schedule.steps != args.steps:
            print(f"error: the schedule has {schedule.steps} steps but --steps is {args.steps}", file=sys.stderr)
            return 2
    else:
        schedule = compute_all(space, args.steps)
    per_step = schedule_macs(schedule.compute, cost)
    full = cost.full * args.steps
    total = int(per_step.sum())
    report = {
        "family": args.family,
        "convention": args.convention,
        "input": {"height": args.height, "width": args.width, "batch": args.batch,
                  "text_len": args.text_len, "num_frames": args.num_frames},
        "schedule": schedule.name,
        "steps": args.steps,
        "macs_per_full_step": cost.full,
        "macs_outside_blocks_per_step": cost.outside,
        "macs_per_step": per_step.tolist(),
        "total_macs": total,
        "speedup_vs_compute_all": full / total,
    }
    ecad = schedule.metadata.get("ecad_metrics", {}).get("total_macs")
    if ecad:
        report["ecad_reported_total_macs"] = ecad
        report["relative_difference_to_ecad"] = (total - ecad) / ecad
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{args.family} {args.height}x{args.width}, batch {args.batch}, {args.steps} steps, convention {args.convention}")
    print(f"schedule: {schedule.name} (computes {schedule.compute_fraction():.1%} of component evaluations)")
    print(f"full step: {cost.full / 1e9:,.3f} GMACs ({cost.outside / 1e9:,.3f} outside the blocks)")
    for s, m in enumerate(per_step):
        print(f"  step {s:3d}: {m / 1e9:12,.3f} GMACs")
    print(f"total: {total / 1e12:.4f} TMACs = {total:,} MACs; {full / total:.3f}x fewer than compute-all")
    if ecad:
        print(f"ECAD reported: {ecad / 1e12:.4f} TMACs; difference {report['relative_difference_to_ecad']:+.4%}")
    return 0


# -- schedule -----------------------------------------------------------------------------------
_KIND_FLAGS = ("interval", "warmup", "component", "p", "seed")


def _make_spec(args: argparse.Namespace) -> str:
    """The spec of `schedule make`: SPEC itself, or the older --kind flags translated to one."""
    if args.spec:
        if args.kind:
            raise ValueError("give either a SPEC or --kind, not both (e.g. `dit-cache schedule make fora:3 ...`)")
        return args.spec
    kind = args.kind or "fora"
    interval = 2 if args.interval is None else args.interval
    if kind == "compute-all":
        return "all"
    if kind == "fora":
        return f"fora:{interval}:{args.warmup or 0}"
    if kind == "cache-component":
        if not args.component:
            raise ValueError("--kind cache-component needs --component")
        return f"cache:{args.component}:{interval}"
    return f"random:{0.5 if args.p is None else args.p}:{args.seed or 0}"


def cmd_schedule_make(args: argparse.Namespace) -> int:
    """Generate a static schedule for a config from a spec (fora:3, cache:ff:2, ...) or the --kind flags."""
    from .resolve import resolve_spec

    if args.spec and any(getattr(args, f) is not None for f in _KIND_FLAGS):
        raise ValueError("the SPEC carries the settings: drop --interval/--warmup/--component/--p/--seed "
                         "(e.g. fora:3:2 = interval 3, warm-up 2)")
    check_out_file(args.out, "--out")
    space, _ = _space_from_args(args)
    spec = resolve_spec(_make_spec(args), space, args.steps)
    if not spec.static:
        raise ValueError(f"{spec.text!r} is a dynamic backend ({type(spec.value).__name__}): its decisions are taken "
                         "while generating, so there is no schedule file to make; pass the spec to `dit-cache eval "
                         "--schedules` or `dit_cache.accelerate(pipe, dit_cache.parse_spec(...))`")
    sched = spec.value
    if args.name:
        sched = sched.with_metadata(name=args.name)
    sched.save(args.out)
    print(f"wrote {args.out}: {sched!r}")
    return 0


def render_schedule(sched) -> str:
    """Text heatmap: one row per block, one column per step; █ compute all, ░ reuse all, ▒ mixed."""
    lines = [f"{sched!r}", "steps →  " + "".join(str(s % 10) for s in range(sched.steps))]
    app = sched.space.applicable
    for b, bid in enumerate(sched.space.block_ids):
        row = ""
        for s in range(sched.steps):
            cells = sched.compute[s, b][app[b]]
            row += "█" if cells.all() else ("░" if not cells.any() else "▒")
        lines.append(f"{bid:>8} {row}")
    return "\n".join(lines)


def cmd_schedule_show(args: argparse.Namespace) -> int:
    """Print a schedule as a text heatmap."""
    sched = _load_any_schedule(args.schedule, repair=True)
    print(render_schedule(sched))
    for c, name in enumerate(sched.space.components):
        app = sched.space.applicable[:, c]
        if app.any():
            print(f"  {name}: computes {sched.compute[:, app, c].mean():.1%}")
    return 0


def cmd_schedule_import_ecad(args: argparse.Namespace) -> int:
    """Convert an ECAD schedule file to dit-cache JSON."""
    from .ecad import load_ecad

    check_out_file(args.out, "--out")
    sched = load_ecad(args.ecad, family=args.family)
    sched.save(args.out)
    print(f"wrote {args.out}: {sched!r}")
    return 0


def cmd_schedule_export_ecad(args: argparse.Namespace) -> int:
    """Convert a dit-cache schedule to ECAD JSON."""
    from .ecad import save_ecad
    from .schedule import Schedule

    check_out_file(args.out, "--out")
    save_ecad(Schedule.load(args.schedule), args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_schedule_check(args: argparse.Namespace) -> int:
    """Validate a schedule file (and, with --family/--config, that it fits the model)."""
    if bool(args.config) != bool(args.family):
        raise ValueError("give --family and --config together: the check is against that model config "
                         f"(got only {'--config' if args.config else '--family'})")
    sched = _load_any_schedule(args.schedule)
    if args.config:
        space, _ = _space_from_args(args)
        why = sched.space.describe_mismatch(space)
        if why:
            print(f"error: {why}", file=sys.stderr)
            return 2
    print(f"ok: {sched!r}")
    return 0


def cmd_schedule_transfer(args: argparse.Namespace) -> int:
    """Map a schedule to another step count (`Schedule.resample`) and/or block count (`Schedule.to_space`)."""
    if args.model and (args.family or args.config):
        raise ValueError("give the target model either as --model or as --family with --config, not both")
    if bool(args.config) != bool(args.family):
        raise ValueError("give --family and --config together (the target model config)")
    if not (args.steps or args.model or args.config):
        raise ValueError("nothing to transfer to: give --steps T and/or the target model (--model, or --family "
                         "with --config)")
    check_out_file(args.out, "--out")
    sched = _load_any_schedule(args.schedule)
    if args.model:
        from .resolve import load_pipeline
        from .runtime import space_of

        sched = sched.to_space(space_of(load_pipeline(args.model).pipe.transformer))
    elif args.config:
        sched = sched.to_space(_space_from_args(args)[0])
    if args.steps:
        sched = sched.resample(args.steps)
    sched.save(args.out)
    print(f"wrote {args.out}: {sched!r}")
    return 0


# -- profile ------------------------------------------------------------------------------------
def _pipeline_and_calls(model: str, prompts: list[str], steps: int, seed: int):
    """(pipeline, one call's kwargs per prompt) for any `--model` (`dit_cache.load_pipeline`)."""
    from .resolve import load_pipeline

    loaded = load_pipeline(model)
    return loaded.pipe, loaded.calls(prompts, seed=seed, steps=steps)


def cmd_profile(args: argparse.Namespace) -> int:
    """Profile a dynamic backend on calibration prompts (uncached runs) and write its JSON profile."""
    from .backends import profiles

    check_out_file(args.out, "--out")  # before the (long) profiling run, not after it
    prompts = profiles.read_prompts(args.prompts, args.limit)
    pipe, calls = _pipeline_and_calls(args.model, prompts, args.steps, args.seed)
    if args.backend == "erta":
        from .backends.erta_profile import profile_erta

        prof = profile_erta(pipe, calls, num_reuse=args.num_reuse, max_consecutive=args.max_consecutive,
                            ridge=args.ridge, criterion=args.criterion, model=args.model)
        what = f"reuse steps {prof['reuse_steps']}, phi {[round(prof['phi'][i], 4) for i in prof['reuse_steps']]}"
    elif args.backend == "magcache":
        from .backends.magcache import calibrate_magcache

        prof = calibrate_magcache(pipe, calls, model=args.model)
        what = f"magnitude ratios {[round(r, 4) for r in prof['mag_ratios']]}"
    else:
        from .backends.teacache import calibrate_teacache

        prof = calibrate_teacache(pipe, calls, model=args.model)
        what = f"coefficients {[round(c, 5) for c in prof['coefficients']]} (rmse {prof['fit']['rmse']:.4g})"
    path = profiles.save_profile(prof, args.out)
    print(f"{args.backend} profile of {args.model} ({len(calls)} prompts, {args.steps} steps): {what} -> {path}")
    return 0


# -- parser -------------------------------------------------------------------------------------
def _model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    from .adapters import families

    p.add_argument("--family", required=required, choices=families(), help="model family")
    p.add_argument("--config", required=required, help="transformer config: JSON file, model folder, or hub id")


def _add_macs(sub) -> None:
    p = sub.add_parser("macs", help="count MACs of a config, optionally under a schedule",
                       description="Exact MACs per step from a transformer config alone (meta device, no weights).")
    _model_args(p)
    p.add_argument("--height", type=positive_int, default=256)
    p.add_argument("--width", type=positive_int, default=256)
    p.add_argument("--steps", type=positive_int, default=20)
    p.add_argument("--batch", type=positive_int, default=2, help="effective batch per step, CFG included (default 2)")
    p.add_argument("--text-len", type=positive_int, default=None, help="text tokens (default: the family's usual length)")
    p.add_argument("--num-frames", type=positive_int, default=1, help="video frames (wan)")
    p.add_argument("--schedule", help="dit-cache or ECAD schedule JSON (default: compute everything)")
    p.add_argument("--convention", choices=("full", "ecad"), default="full",
                   help="full: linear+conv+attention matmuls; ecad: linear+conv only, as ECAD's figures")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_macs)


def _add_schedule_make(ssub) -> None:
    q = ssub.add_parser("make", help="generate a schedule for a model config from a spec (fora:3, cache:ff:2, ...)",
                        description="Write a static schedule: SPEC is all, fora:N[:WARMUP], cache:COMPONENT:N, "
                                    "random:P[:SEED] or a schedule file (the grammar of `dit-cache eval --schedules`). "
                                    "The --kind flags are the older spelling of the same (default: fora:2).")
    q.add_argument("spec", nargs="?", help="static schedule spec, e.g. fora:3 or fora:3:2 (interval 3, warm-up 2)")
    _model_args(q)
    q.add_argument("--steps", type=positive_int, default=20)
    q.add_argument("--kind", choices=("compute-all", "fora", "cache-component", "random"), default=None,
                   help="older form of SPEC: compute-all = all, fora = fora:INTERVAL:WARMUP, cache-component = "
                        "cache:COMPONENT:INTERVAL, random = random:P:SEED")
    q.add_argument("--interval", type=positive_int, default=None, help="--kind fora / cache-component: compute every N steps (2)")
    q.add_argument("--warmup", type=nonnegative_int, default=None, help="--kind fora: steps computed before the interval starts (0)")
    q.add_argument("--component", help="--kind cache-component: which component to cache")
    q.add_argument("--p", type=float, default=None, help="--kind random: probability of reuse per cell (0.5)")
    q.add_argument("--seed", type=int, default=None, help="--kind random: seed (0)")
    q.add_argument("--name", help="name stored in the schedule's metadata")
    q.add_argument("--out", "-o", required=True, help="output JSON path")
    q.set_defaults(func=cmd_schedule_make)


def _add_schedule(sub) -> None:
    p = sub.add_parser("schedule", help="make, show, convert and check schedules")
    ssub = p.add_subparsers(dest="schedule_command", metavar="action")
    _add_schedule_make(ssub)
    q = ssub.add_parser("show", help="print a schedule as a text heatmap (blocks x steps)")
    q.add_argument("schedule", help="dit-cache or ECAD JSON")
    q.set_defaults(func=cmd_schedule_show)
    q = ssub.add_parser("import-ecad", help="convert an ECAD schedule file to dit-cache JSON")
    q.add_argument("ecad", help="ECAD JSON file")
    q.add_argument("--family", choices=("pixart", "flux"), help="default: inferred from the component names")
    q.add_argument("--out", "-o", required=True)
    q.set_defaults(func=cmd_schedule_import_ecad)
    q = ssub.add_parser("export-ecad", help="convert a dit-cache schedule to ECAD JSON")
    q.add_argument("schedule")
    q.add_argument("--out", "-o", required=True)
    q.set_defaults(func=cmd_schedule_export_ecad)
    q = ssub.add_parser("transfer", help="map a schedule to another step count and/or block count of its family",
                        description="Steps: each cell keeps its compute density and rhythm (FORA-N stays FORA-N; "
                                    "`Schedule.resample`). Blocks: matched per block group by relative depth "
                                    "(`Schedule.to_space`), e.g. a schedule of a 12-block model on a 28-block one.")
    q.add_argument("schedule", help="dit-cache or ECAD JSON")
    q.add_argument("--steps", type=positive_int, default=None, help="target step count")
    q.add_argument("--model", default=None, help="target model; its transformer gives the block count: " + MODEL_HELP)
    _model_args(q, required=False)
    q.add_argument("--out", "-o", required=True, help="output JSON path")
    q.set_defaults(func=cmd_schedule_transfer)
    q = ssub.add_parser("check", help="validate a schedule file, optionally against a model config")
    q.add_argument("schedule")
    _model_args(q, required=False)
    q.set_defaults(func=cmd_schedule_check)


def _add_profile(sub) -> None:
    p = sub.add_parser("profile", help="profile ERTACache / calibrate TeaCache or MagCache on calibration prompts",
                       description="Run the model uncached on calibration prompts and write a JSON profile for a "
                                   "dynamic backend (tied to this model and step count).")
    p.add_argument("--backend", required=True, choices=("erta", "teacache", "magcache"))
    p.add_argument("--model", default="tiny", help=MODEL_HELP)
    p.add_argument("--prompts", required=True, help="text file, one prompt per line")
    p.add_argument("--limit", type=positive_int, default=None, help="use the first N prompts")
    p.add_argument("--steps", type=positive_int, default=20)
    p.add_argument("--seed", type=int, default=0, help="seed of the first prompt (+1 per prompt)")
    p.add_argument("--num-reuse", type=nonnegative_int, default=8, help="erta: number of reuse steps")
    p.add_argument("--max-consecutive", type=positive_int, default=1, help="erta: most reuse steps in a row")
    p.add_argument("--ridge", type=float, default=0.1, help="erta: relative shrinkage of the linear correction K")
    p.add_argument("--criterion", choices=("final", "output", "residual"), default="final",
                   help="erta: error that picks the reuse steps (final: final-output MSE incl. the sampler's amplification; slowest)")
    p.add_argument("--out", "-o", required=True, help="output JSON path")
    p.set_defaults(func=cmd_profile)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = CliParser(prog="dit-cache", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="dit-cache 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="command")
    _add_macs(sub)
    _add_schedule(sub)
    _add_profile(sub)
    _add_plugin_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `dit-cache` console script."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a usage error (one line, exit 2), --help or --version
        return e.code if isinstance(e.code, int) else 0
    if not getattr(args, "func", None):
        if args.command is None:
            parser.print_help()
            return 0
        parser.parse_args([args.command, "--help"])  # prints that command's help and exits
    np.set_printoptions(linewidth=120)
    return run_command(args.func, args)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception classes that mean bad input (a file, a value, an output place): one `error:` line, exit 2.
    ValueError covers ScheduleError, ProfileError, SearchError and config errors; RuntimeError covers the
    metric / objective / model-loading errors that name their fix. Anything else is a bug: traceback."""
    from .schedule import ScheduleError

    return (ScheduleError, ValueError, RuntimeError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            PermissionError, FileExistsError)


def run_command(func, args: argparse.Namespace) -> int:
    """Run a subcommand; a bad-input error prints one `error: ...` line on stderr and returns 2 (the only place
    the CLI turns exceptions into messages; `python -m search` uses it too)."""
    try:
        return func(args)
    except user_errors() as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
