from magflow.embed.embed import embed_tileset
from magflow.embed.external import model_source
from magflow.logs import log_to_file

log_to_file(snakemake.log[0])
settings = snakemake.params.settings
embed_tileset(
    snakemake.input.stores,
    snakemake.output.embeddings,
    model_source(snakemake.wildcards.model, snakemake.params.model),
    name=snakemake.wildcards.model,
    mpps=settings["mpps"],
    anchor_mpp=settings["anchor_mpp"],
    resample=settings["resample"],
    mean_patch=settings["mean_patch"],
    labels=snakemake.params.labels,
    label_csv=settings["label_csv"],
    batch_size=settings["batch_size"],
    workers=settings["workers"],
    config=snakemake.config,
)
