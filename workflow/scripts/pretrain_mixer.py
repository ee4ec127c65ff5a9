from magflow.aggregate.pretrain_mixer import MixerTrainConfig, train_mixer
from magflow.logs import log_to_file

log_to_file(snakemake.log[0])
train_mixer(
    MixerTrainConfig.from_dict(dict(snakemake.params.train)),
    snakemake.input.regions,
    snakemake.params.out_dir,
    provenance_config=snakemake.config,
)
