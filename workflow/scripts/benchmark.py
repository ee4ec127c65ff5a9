from magflow.benchmark.config import BenchmarkSpec
from magflow.benchmark.benchmark import run_benchmark
from magflow.embed import model_source
from magflow.logs import log_to_file

log_to_file(snakemake.log[0])
settings = snakemake.params.settings
run_benchmark(
    BenchmarkSpec.from_config(snakemake.wildcards.benchmark, snakemake.params.benchmark),
    model_source(snakemake.wildcards.model, snakemake.params.model),
    snakemake.output.embeddings,
    snakemake.output.record,
    name=snakemake.wildcards.model,
    batch_size=settings["batch_size"],
    workers=settings["workers"],
    mean_patch=settings["mean_patch"],
    config=snakemake.config,
)
