from magflow.logs import log_to_file
from magflow.preprocess.tissue import TissueParams
from magflow.preprocess.tissue_mask import make_tissue_mask

log_to_file(snakemake.log[0])
make_tissue_mask(
    snakemake.params.slide,
    snakemake.wildcards.slide_id,
    snakemake.output.mask,
    snakemake.output.qc,
    TissueParams(**snakemake.params.tissue),
    sheet_mpp=snakemake.params.sheet_mpp,
    tolerance=snakemake.params.tolerance,
    brightfield_check=snakemake.params.brightfield_check,
    max_plain_megapixels=snakemake.params.max_plain_megapixels,
    config=snakemake.config,
)
