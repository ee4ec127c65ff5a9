"""Rule plot_samplers: the strategy comparison figure of one kernel."""

import logging

from magflow.sampling.plot_samplers import plot_sampler_comparison

logging.basicConfig(
    filename=snakemake.log[0],  # noqa: F821
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
)
try:
    plot_sampler_comparison(list(snakemake.input), snakemake.output[0])  # noqa: F821
except Exception:
    logging.exception("plot_samplers failed")
    raise
