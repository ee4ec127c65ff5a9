from pathlib import Path

from magflow.aggregate.abmil_step import run_abmil_method
from magflow.logs import log_to_file

log_to_file(snakemake.log[0])
method = snakemake.params.method
run_abmil_method(
    method,
    snakemake.input.regions,
    snakemake.params.labels,
    snakemake.output.record,
    mil=snakemake.params.mil,
    groups=snakemake.params.groups,
    sheet_splits=snakemake.params.sheet_splits,
    mixer_dir=str(Path(snakemake.input.mixer).parent) if method.kind == "mixer" else None,
    mixer_train=snakemake.params.mixer_train,
    run_config=snakemake.config,
)
