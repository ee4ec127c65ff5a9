# Multi-magnification benchmarks: every benchmark folder of config `benchmarks` x every model (each
# pretraining run, each embed.external model and each run's {run}~init control) -> embeddings and a record
# with the cms protocol's probes, both RankMe definitions and the magnification robustness index; then one
# panel and one table per benchmark. A `fixture: true` benchmark is first written by benchmark_fixture.


rule benchmark_fixture:
    output:
        directory("results/benchmark_fixture/{benchmark}"),
    params:
        layout=lambda wildcards: BENCHMARKS[wildcards.benchmark].layout,
        mpps=lambda wildcards: list(BENCHMARKS[wildcards.benchmark].mpps),
    resources:
        **rule_resources("benchmark_fixture"),
    log:
        "logs/benchmarks/{benchmark}/fixture.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/benchmark_fixture.py"


rule benchmark:
    input:
        unpack(embed_model_files),
        benchmark=benchmark_files,
    output:
        embeddings="results/benchmarks/{benchmark}/{model}.h5",
        record="results/benchmarks/{benchmark}/{model}.json",
    params:
        model=embed_model,
        benchmark=benchmark_settings,
        settings=EMBED,
    threads: max(1, EMBED["workers"])
    resources:
        **rule_resources("benchmark", gpu=EMBED["gpus"]),
    log:
        "logs/benchmarks/{benchmark}/{model}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/benchmark.py"


rule benchmark_report:
    input:
        records=benchmark_records,
    output:
        figure=report(
            "results/report/benchmarks/{benchmark}.png",
            caption="../report/benchmark_profiles.rst",
            category="6. Benchmarks",
            subcategory="{benchmark}",
            labels={"benchmark": "{benchmark}", "figure": "balanced-accuracy profiles"},
        ),
        table=report(
            "results/report/benchmarks/{benchmark}.html",
            caption="../report/benchmark_table.rst",
            category="6. Benchmarks",
            subcategory="{benchmark}",
            labels={"benchmark": "{benchmark}", "figure": "table"},
        ),
        tsv="results/report/benchmarks/{benchmark}.tsv",
    resources:
        **rule_resources("benchmark_report"),
    log:
        "logs/benchmarks/{benchmark}/report.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/benchmark_report.py"
