from magflow.aggregate.abmil_table import abmil_table
from magflow.logs import log_to_file

log_to_file(snakemake.log[0])
abmil_table(snakemake.input.records, snakemake.output.tsv, snakemake.output.html, snakemake.output.design)
