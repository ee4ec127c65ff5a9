from magflow.aggregate.abmil_step import write_table
from magflow.aggregate.design_figure import write_design_figure
from magflow.logs import log_to_file

log_to_file(snakemake.log[0])
write_table(snakemake.input.records, snakemake.output.tsv, snakemake.output.html)
write_design_figure(snakemake.input.records, snakemake.output.design)
