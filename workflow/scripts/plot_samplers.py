from magflow.logs import log_to_file
from magflow.sampling.plot_samplers import plot_sampler_comparison

log_to_file(snakemake.log[0])
plot_sampler_comparison(list(snakemake.input), snakemake.output[0])
