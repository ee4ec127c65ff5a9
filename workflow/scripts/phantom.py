from magflow.logs import log_to_file
from magflow.phantom.phantom import make_phantom

log_to_file(snakemake.log[0])
make_phantom(
    snakemake.wildcards.slide_id,
    snakemake.params.label,
    snakemake.params.settings,
    snakemake.output.slide,
    snakemake.output.labels,
    snakemake.output.meta,
    snakemake.params.cross_scale,
)
