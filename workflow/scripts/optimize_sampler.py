from magflow.logs import log_to_file
from magflow.sampling.optimize_sampler import optimize_sampler

log_to_file(snakemake.log[0])
optimize_sampler(snakemake.params.sampler, snakemake.output.json)
