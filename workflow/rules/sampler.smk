# Magnification sampling: one job per row of the sweep TSV (kernel x strategy x lam x mpp),
# and one comparison figure per kernel.

import pandas as pd
from snakemake.utils import Paramspace

from magflow.sampling.sweep import SWEEP_COLUMNS, check_sweep, sampler_config

SAMPLER_SETTINGS = config["samplers"]
_sampler_sweep = pd.read_csv(SAMPLER_SETTINGS["sweep"], sep="\t", comment="#")
check_sweep(_sampler_sweep.to_dict("records"), SAMPLER_SETTINGS, source=SAMPLER_SETTINGS["sweep"])

# Names read like results/samplers/kernel~abs/strategy~cu_maxavg_lam~0.1_mpp~NA.json
SAMPLER_SPACE = Paramspace(
    _sampler_sweep[list(SWEEP_COLUMNS)],
    filename_params=["strategy", "lam", "mpp"],
    single_wildcard="name",
)


def sampler_jsons(kernel=None):
    """The sampler JSONs of the sweep, all or those of one kernel."""
    return [
        f"results/samplers/{name}.json"
        for name, row_kernel in zip(SAMPLER_SPACE.instance_patterns, SAMPLER_SPACE.dataframe["kernel"])
        if kernel is None or row_kernel == kernel
    ]


def sampler_figures():
    """One comparison figure per kernel of the sweep."""
    kernels = SAMPLER_SPACE.dataframe["kernel"].unique()
    return [f"results/samplers/kernel~{k}/comparison.png" for k in kernels]


rule optimize_sampler:
    output:
        json="results/samplers/{name}.json",
    params:
        sampler=lambda wc: sampler_config(SAMPLER_SPACE.instance(wc), SAMPLER_SETTINGS),
    log:
        "logs/samplers/{name}.log",
    wildcard_constraints:
        name=r"kernel~[^/]+/strategy~[^/]+",
    script:
        "../scripts/optimize_sampler.py"


rule plot_samplers:
    input:
        lambda wc: sampler_jsons(wc.kernel),
    output:
        report(
            "results/samplers/kernel~{kernel}/comparison.png",
            caption="../report/samplers.rst",
            category="Magnification sampling",
        ),
    log:
        "logs/samplers/kernel~{kernel}/comparison.log",
    wildcard_constraints:
        kernel=r"[^/]+",
    script:
        "../scripts/plot_samplers.py"
