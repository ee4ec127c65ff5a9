from magflow.evaluate.mad_eval import MadEvalSettings, evaluate_mad
from magflow.logs import log_to_file

log_to_file(snakemake.log[0])
evaluate_mad(
    snakemake.input.tiles,
    snakemake.output.json,
    masks=snakemake.params.masks,
    settings=MadEvalSettings.from_config(snakemake.params.settings),
    maps_dir=snakemake.output.maps,
    pca=snakemake.output.pca,
    config=snakemake.config,
)
