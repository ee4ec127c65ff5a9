from magflow.logs import log_to_file
from magflow.report.rankme_comparison import plot_rankme_comparison_files

log_to_file(snakemake.log[0])
plot_rankme_comparison_files(list(snakemake.input), snakemake.output[0])
