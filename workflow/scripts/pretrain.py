from magflow.logs import log_to_file
from magflow.pretrain.pretrain import launch_pretraining

log_to_file(snakemake.log[0])
launch_pretraining(
    snakemake.input.stores,
    snakemake.input.sampler or None,  # none for a MAD run, which gets its settings as params.mad
    snakemake.params.out_dir,
    snakemake.params.train,
    snakemake.params.seed,
    gpus=snakemake.params.gpus,
    log_file=snakemake.log[0],
    mad=snakemake.params.mad,
)
