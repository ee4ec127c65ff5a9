from magflow.evaluate.evaluate import evaluate_metric
from magflow.logs import log_to_file

log_to_file(snakemake.log[0])
context = snakemake.params.context
evaluate_metric(
    snakemake.params.metric,
    snakemake.input.embeddings,
    snakemake.output.json,
    settings=context["settings"],
    sheet_splits=context["sheet_splits"],
    groups=context["groups"],
    masks=context["masks"],
    maps_dir=snakemake.output.get("maps"),
    config=snakemake.config,
)
