from magflow.logs import log_to_file
from magflow.report.mad_report import write_mad_tables

log_to_file(snakemake.log[0])
write_mad_tables(
    dict(zip(snakemake.params.models, snakemake.input.records)),
    snakemake.output.tsv,
    snakemake.output.html,
    table3_tsv=snakemake.output.table3,
    table5_tsv=snakemake.output.table5,
)
