from magflow.logs import log_to_file
from magflow.report.slide_qc_table import write_slide_table

log_to_file(snakemake.log[0])
write_slide_table(snakemake.input.masks, snakemake.output.tsv, snakemake.output.html)
