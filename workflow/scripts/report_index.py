from magflow.logs import log_to_file
from magflow.report.report_index import write_index

log_to_file(snakemake.log[0])
write_index(
    snakemake.output[0],
    snakemake.params.models,
    snakemake.input.comparison,
    config=snakemake.config,
    manifests=[snakemake.input.manifest],
    slide_table=snakemake.input.slides,
    slide_level=snakemake.input.get("slide_level"),
    mad=snakemake.input.get("mad"),
    benchmarks=snakemake.params.benchmarks,
    embeddings=dict(zip(snakemake.params.models, snakemake.input.embeddings)),
)
