"""The sampler verbs: solve a magnification sampling distribution, compare the strategies."""

from __future__ import annotations

import argparse

from magflow.cli.common import add_verb, wrote
from magflow.defaults import default


def _optimize_sampler(args: argparse.Namespace) -> int:
    from magflow.sampling import SamplerConfig
    from magflow.sampling.optimize_sampler import optimize_sampler

    config = SamplerConfig(strategy=args.strategy, kernel=args.kernel, lam=args.lam, mpp=args.mpp,
                           lo=args.range[0], hi=args.range[1], grid_step=args.grid_step)
    sampler = optimize_sampler(config, args.out)
    return wrote(args.out, before=f"{args.strategy} ({args.kernel}): min I = {sampler.min_quality:.4f}, mean I = "
                                  f"{sampler.mean_quality:.4f}")


def _plot_samplers(args: argparse.Namespace) -> int:
    from magflow.sampling.plot_samplers import plot_sampler_comparison

    plot_sampler_comparison(args.samplers, args.out)
    return wrote(args.out)


def add_parsers(steps: argparse._SubParsersAction) -> None:
    p = add_verb(steps, "optimize-sampler", _optimize_sampler,
                 "solve a magnification sampling distribution into a JSON record")
    p.add_argument("--strategy", required=True, help="single, du, cu, cu_maxavg or cu_minmax")
    p.add_argument("--kernel", default="abs", help="abs or area (or a registered kernel)")
    p.add_argument("--lam", type=float, help="λ of cu_maxavg (default 1.0)")
    p.add_argument("--mpp", type=float, help="the mpp of strategy single")
    p.add_argument("--range", type=float, nargs=2, default=default("samplers.range"), metavar=("LO", "HI"))
    p.add_argument("--grid-step", type=float, default=default("samplers.grid_step"))
    p.add_argument("--out", required=True, help="output JSON")

    p = add_verb(steps, "plot-samplers", _plot_samplers, "the strategy comparison figure of one kernel's sampler JSONs")
    p.add_argument("samplers", nargs="+", help="sampler JSONs, e.g. results/samplers/kernel~abs/*.json")
    p.add_argument("--out", required=True, help="output PNG")
