from magflow.benchmark.benchmark_fixture import write_fixture
from magflow.logs import log_to_file

log_to_file(snakemake.log[0])
write_fixture(snakemake.params.layout, snakemake.output[0], mpps=snakemake.params.mpps)
