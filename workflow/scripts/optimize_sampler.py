"""Rule optimize_sampler: solve one sampler of the sweep and write its JSON."""

import logging

from magflow.sampling import optimize_sampler

logging.basicConfig(
    filename=snakemake.log[0],  # noqa: F821
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
)
try:
    optimize_sampler(snakemake.params.sampler, snakemake.output.json)  # noqa: F821
except Exception:
    logging.exception("optimize_sampler failed")
    raise
