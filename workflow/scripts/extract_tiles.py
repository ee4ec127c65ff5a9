from magflow.logs import log_to_file
from magflow.preprocess.extract_tiles import TileSetParams, extract_tiles

log_to_file(snakemake.log[0])
extract_tiles(
    snakemake.params.slide,
    snakemake.wildcards.slide_id,
    snakemake.input.mask,
    snakemake.output.store,
    TileSetParams(name=snakemake.wildcards.tileset, **snakemake.params.tileset),
    sheet_mpp=snakemake.params.sheet_mpp,
    tolerance=snakemake.params.tolerance,
    max_plain_megapixels=snakemake.params.max_plain_megapixels,
    workers=snakemake.threads,
    config=snakemake.config,
)
