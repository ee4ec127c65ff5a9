from magflow.aggregate.region_embed import build_slide_regions
from magflow.embed import model_source
from magflow.logs import log_to_file

log_to_file(snakemake.log[0])
build_slide_regions(
    snakemake.input.store,
    snakemake.output.regions,
    model_source(snakemake.wildcards.model, snakemake.params.model),
    name=snakemake.wildcards.model,
    t=snakemake.params.t,
    scales=snakemake.params.scales,
    batch_size=snakemake.params.batch_size,
    mean_patch=snakemake.params.mean_patch,
    config=snakemake.config,
)
