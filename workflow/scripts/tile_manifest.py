from magflow.logs import log_to_file
from magflow.preprocess.tile_manifest import write_manifest

log_to_file(snakemake.log[0])
write_manifest(
    snakemake.input.stores,
    snakemake.params.splits,
    snakemake.wildcards.tileset,
    snakemake.output.tsv,
    snakemake.output.html,
)
