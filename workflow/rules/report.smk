# Reports: each model's figures and tables from its metric records, the RankMe comparison across models, and
# the self-contained index page (results/report/index.html) that gathers every stage's figures and tables.
from magflow.evaluate.registry import MASK_METRICS
from magflow.report.names import LABELS, TABLE_FILES


rule evaluation_figures:
    input:
        records=expand("results/eval/{{model}}/{metric}.json", metric=EVAL_METRICS),
        controls=control_records,
        maps=expand("results/eval/{{model}}/{metric}", metric=MASK_METRICS),
        embeddings=eval_embeddings,
    output:
        # every figure and the tables page in the Snakemake report, with its caption eval_<key>.rst
        **{
            key: report(
                f"results/report/{{model}}/{name}",
                caption=f"../report/eval_{key}.rst",
                category="4. Evaluation",
                subcategory="{model}",
                labels={"model": "{model}", "figure": LABELS[key]},
            )
            for key, name in {**FIGURES, "tables": TABLES}.items()
        },
        # the tables as TSVs, which index.html shows
        **{key: f"results/report/{{model}}/{name}" for key, name in TABLE_FILES.items()},
    params:
        eval_dir=lambda wildcards: f"results/eval/{wildcards.model}",
        control_dir=control_eval_dir,
        out_dir=lambda wildcards: f"results/report/{wildcards.model}",
        settings=EVALUATE,
    resources:
        **rule_resources("evaluation_figures"),
    log:
        "logs/eval/{model}/figures.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluation_figures.py"


rule rankme_comparison:
    input:
        expand("results/eval/{model}/rankme.json", model=EMBED_MODELS + list(CONTROLS)),
    output:
        report(
            "results/report/rankme_profiles.png",
            caption="../report/eval_comparison.rst",
            category="4. Evaluation",
            subcategory="All models",
        ),
    resources:
        **rule_resources("rankme_comparison"),
    log:
        "logs/eval/rankme_comparison.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/rankme_comparison.py"


rule report_index:
    input:
        figures=evaluation_figure_files(),
        tables=expand("results/report/{model}/{name}", model=EMBED_MODELS, name=list(TABLE_FILES.values())),
        records=evaluation_records(),
        embeddings=expand("results/embeddings/{model}/{tileset}.h5", model=EMBED_MODELS, tileset=EMBED["tileset"]),
        comparison="results/report/rankme_profiles.png",
        manifest=f"results/tiles/{EMBED['tileset']}/manifest.tsv",
        slides="results/qc/slides.tsv",
        **({"slide_level": "results/report/abmil_auroc.tsv"} if AGG_ENCODER is not None else {}),
        **({"mad": "results/report/mad_tables.tsv"} if MAD_MODELS else {}),
        benchmarks=benchmark_report_files(),
    output:
        report(
            "results/report/index.html",
            caption="../report/eval_index.rst",
            category="4. Evaluation",
            subcategory="All models",
        ),
    params:
        models=EMBED_MODELS,
        benchmarks=benchmark_panels(),
    resources:
        **rule_resources("report_index"),
    log:
        "logs/eval/index.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/report_index.py"
