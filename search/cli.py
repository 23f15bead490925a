"""`dit-cache search`: learn a Pareto front of caching schedules for one model on calibration prompts."""

from __future__ import annotations

import argparse
import json

from dit_cache.io import check_out_dir, nonnegative_int, positive_int
from dit_cache.resolve import MODEL_HELP

from .nsga import SearchConfig
from .objectives import OBJECTIVES

EPILOG = """example:
  dit-cache search --model tiny --prompts calib_prompts/shapes_calib.txt --num-prompts 16 \\
      --population 24 --generations 12 --objective fidelity --late-bias 4 --workers 2 --out runs/shapes
  dit-cache search ... --out runs/shapes --resume      # continue a killed run
outputs: front/*.json (schedules with objectives and MACs), front.png, history.json, checkpoint.json"""


def _cmd(args: argparse.Namespace) -> int:
    from .nsga import Search

    cfg = SearchConfig(
        model=args.model, prompts=args.prompts, num_prompts=args.num_prompts, population=args.population,
        generations=args.generations, objective=args.objective, steps=args.steps, seed=args.seed,
        workers=args.workers, backend=args.backend, batch_size=args.batch_size,
        memory_budget_mb=args.memory_budget_mb, spill_mb=args.spill_mb, prefix_sharing=not args.no_prefix_sharing, cxpb=args.cxpb,
        cx_points=args.cx_points, mutpb=args.mutpb, indpb=args.indpb,
        late_bias=args.late_bias, clip_weights=args.clip_weights,
        forecast=args.forecast, forecast_order=args.forecast_order, init=list(args.init), multi_fidelity=args.multi_fidelity, mf_margin=args.mf_margin,
        profile_seeds=not args.no_profile_seeds, screen_keep=args.screen_keep, screen_pool=args.screen_pool,
        screen_generations=args.screen_generations,
    )
    # bad input (SearchError, ObjectiveUnavailable, a missing file): one `error:` line from dit_cache.cli.run_command
    check_out_dir(args.out, "--out")
    try:
        search = Search(cfg, args.out)
    except ImportError as e:  # an optional dependency of --backend / --objective
        raise RuntimeError(str(e)) from None
    try:
        summary = search.run(resume=args.resume, progress=not args.quiet)
    finally:
        search.close()
    if not search.is_main:  # accelerate: the main process reports
        return 0
    print(f"front ({len(summary['front'])} schedules) in {args.out}/front/:")
    for r in summary["front"]:
        print(f"  {r['file']}: {r['macs_speedup']:.2f}x MACs, {cfg.objective} loss {r['quality']:.4g}")
    print(json.dumps({k: summary[k] for k in ("evaluations", "cache_hits", "block_evals", "block_evals_naive",
                                              "prefix_sharing_saving", "wall_s")}))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The search options."""
    d = SearchConfig()
    p.add_argument("--model", default=d.model, help=MODEL_HELP)
    p.add_argument("--prompts", default=d.prompts, help=f"calibration prompts, one per line (default {d.prompts})")
    p.add_argument("--num-prompts", type=positive_int, default=None, help="use the first N prompts of the file")
    p.add_argument("--population", type=positive_int, default=d.population, help=f"NSGA-II population (default {d.population})")
    p.add_argument("--generations", type=nonnegative_int, default=d.generations, help=f"generations (default {d.generations})")
    p.add_argument("--objective", default=d.objective, choices=list(OBJECTIVES),
                   help="quality objective (default fidelity: mean latent MSE to the uncached output; psnr: mean "
                   "per-prompt latent PSNR deficit, robust to the few prompts that bifurcate under caching; image-psnr: "
                   "the same on the decoded images, the metric search.validate and dit-cache eval judge by)")
    p.add_argument("--steps", type=positive_int, default=d.steps, help=f"denoising steps (default {d.steps})")
    p.add_argument("--seed", type=int, default=d.seed, help="search seed (also picks the noise seeds)")
    p.add_argument("--workers", type=positive_int, default=d.workers, help="parallel evaluation processes (default 1)")
    p.add_argument("--backend", default=d.backend, choices=["local", "ray", "accelerate"],
                   help="worker backend (default local): 'local' = --workers processes on this machine, 'ray' = "
                        "Ray actors, 'accelerate' = one pipeline per process of `accelerate launch -m search ...` "
                        "(--workers is then the launcher's --num_processes)")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="prompts per generation batch (default 16)")
    p.add_argument("--memory-budget-mb", type=nonnegative_int, default=d.memory_budget_mb,
                   help=f"prefix-state cache per worker in MiB (default {d.memory_budget_mb})")
    p.add_argument("--spill-mb", type=nonnegative_int, default=d.spill_mb,
                   help="disk budget per worker (MiB) for prefix states evicted from memory, in OUT/prefix_spill "
                        "(default 0: evicted states are dropped; results are identical either way)")
    p.add_argument("--no-prefix-sharing", action="store_true", help="evaluate every candidate from step 0")
    p.add_argument("--cxpb", type=float, default=d.cxpb, help=f"crossover probability (default {d.cxpb})")
    p.add_argument("--cx-points", type=positive_int, default=d.cx_points, help=f"crossover points along steps (default {d.cx_points})")
    p.add_argument("--mutpb", type=float, default=d.mutpb, help=f"probability a child is mutated (default {d.mutpb})")
    p.add_argument("--indpb", type=float, default=None, help="per-cell flip probability (default 2 / evolvable cells)")
    p.add_argument("--late-bias", type=float, default=d.late_bias,
                   help="weight step i's variation by (i/S)^B: B > 0 keeps parents' prefixes, so prefix sharing "
                   "saves more (default 0 = uniform)")
    p.add_argument("--clip-weights", default=None, help="local open_clip ViT-B-32 weights for --objective clip")
    p.add_argument("--forecast", action="store_true",
                   help="cells may also be Taylor forecasts (TaylorSeer) instead of reuse: the search mixes both")
    p.add_argument("--forecast-order", type=nonnegative_int, default=d.forecast_order, help="Taylor order of forecast cells (default 1)")
    p.add_argument("--init", nargs="*", default=[], metavar="SCHEDULE",
                   help="schedule files (dit-cache or ECAD JSON) added to the initial population, e.g. a previous front")
    p.add_argument("--no-profile-seeds", action="store_true",
                   help="skip the step profile (one probe per step: reuse that step alone) and its seeds "
                   "'reuse the k steps with the lowest probe error' (ERTACache's step selection)")
    p.add_argument("--multi-fidelity", action="store_true",
                   help="children see the first --batch-size prompts first; the rest only if no parent dominates "
                   "them there by more than --mf-margin (changes results; off by default)")
    p.add_argument("--mf-margin", type=float, default=d.mf_margin, help=f"multi-fidelity margin (default {d.mf_margin})")
    p.add_argument("--screen-keep", type=float, default=d.screen_keep,
                   help="surrogate pre-screening: evaluate only this fraction of a population per generation, the "
                   "children a ridge model of the evaluated schedules predicts best against the front (default "
                   f"{d.screen_keep} = off; every reported number stays a full evaluation)")
    p.add_argument("--screen-pool", type=positive_int, default=d.screen_pool,
                   help=f"with --screen-keep < 1: breed this many populations of children to pick from (default {d.screen_pool})")
    p.add_argument("--screen-generations", type=positive_int, default=d.screen_generations,
                   help="with --screen-keep < 1: breed that pool over this many NSGA-II generations on the surrogate's "
                   f"predictions (surrogate-assisted search; default {d.screen_generations} = one breeding)")
    p.add_argument("--out", default="runs/search", help="run folder (default runs/search)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub) -> None:
    """Add `dit-cache search` (entry point of the `dit_cache.commands` group)."""
    p = sub.add_parser("search", help="learn Pareto-optimal caching schedules for a model (NSGA-II)",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=_cmd)


def main(argv: list[str] | None = None) -> int:
    """`python -m search ...` (same options as `dit-cache search`)."""
    from dit_cache.cli import CliParser, run_command

    p = CliParser(prog="python -m search", description=__doc__, epilog=EPILOG,
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run_command(_cmd, p.parse_args(argv))
