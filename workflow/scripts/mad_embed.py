from magflow.embed import model_source
from magflow.evaluate.mad_embed import embed_mad_tiles
from magflow.logs import log_to_file

log_to_file(snakemake.log[0])
embed_mad_tiles(
    snakemake.input.stores,
    snakemake.output.tiles,
    model_source(snakemake.wildcards.model, snakemake.params.model),
    name=snakemake.wildcards.model,
    splits=snakemake.params.splits,
    labels=snakemake.params.masks,
    batch_size=snakemake.params.batch_size,
    mean_patch=snakemake.params.mean_patch,
    config=snakemake.config,
)
