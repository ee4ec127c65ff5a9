from magflow.logs import log_to_file
from magflow.report.benchmark_report import write_benchmark_report

log_to_file(snakemake.log[0])
write_benchmark_report(
    snakemake.input.records,
    snakemake.output.figure,
    snakemake.output.table,
    snakemake.output.tsv,
    benchmark=snakemake.wildcards.benchmark,
)
