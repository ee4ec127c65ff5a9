from magflow.logs import log_to_file
from magflow.report.evaluation_figures import write_model_report

log_to_file(snakemake.log[0])
write_model_report(
    snakemake.params.eval_dir,
    snakemake.input.embeddings,
    snakemake.params.out_dir,
    snakemake.params.settings,
    snakemake.params.control_dir,
)
