from pathlib import Path

from magflow.aggregate.abmil import run_abmil_tasks
from magflow.logs import log_to_file

log_to_file(snakemake.log[0])
method = snakemake.params.method
tasks = snakemake.params.tasks
run_abmil_tasks(
    method,
    snakemake.input.regions,
    tasks,
    dict(zip(tasks, snakemake.output.records)),
    mil=snakemake.params.mil,
    groups=snakemake.params.groups,
    sheet_splits=snakemake.params.sheet_splits,
    split_mode=snakemake.params.split_mode,
    mixer_dir=str(Path(snakemake.input.mixer).parent) if method.kind == "mixer" else None,
    mixer_train=snakemake.params.mixer_train,
    run_config=snakemake.config,
)
