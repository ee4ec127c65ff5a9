# Magnification sampling: one job per row of the sweep TSV (kernel x strategy x lam x mpp),
# and one comparison figure per kernel. The sweep (SAMPLERS) is planned by magflow.plan.

rule optimize_sampler:
    output:
        json="results/samplers/{name}.json",
    params:
        sampler=lambda wc: SAMPLERS[wc.name].config,
    resources:
        **rule_resources("optimize_sampler"),
    log:
        "logs/samplers/{name}.log",
    wildcard_constraints:
        name=r"kernel~[^/]+/strategy~[^/]+",
    conda:
        "../../environment.yml"
    script:
        "../scripts/optimize_sampler.py"


rule plot_samplers:
    input:
        lambda wc: sampler_jsons(wc.kernel),
    output:
        report(
            "results/samplers/kernel~{kernel}/comparison.png",
            caption="../report/samplers.rst",
            category="3. Magnification sampling",
        ),
    resources:
        **rule_resources("plot_samplers"),
    log:
        "logs/samplers/kernel~{kernel}/comparison.log",
    wildcard_constraints:
        kernel=r"[^/]+",
    conda:
        "../../environment.yml"
    script:
        "../scripts/plot_samplers.py"
