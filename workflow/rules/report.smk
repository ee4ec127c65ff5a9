# Reports: each model's figures and tables from its metric records, the RankMe comparison across models, and
# the self-contained index page (results/report/index.html) that gathers every stage's tables.


rule evaluation_figures:
    input:
        records=expand("results/eval/{{model}}/{metric}.json", metric=EVAL_METRICS),
        controls=control_records,
        maps="results/eval/{model}/segmentation",
        embeddings=eval_embeddings,
    output:
        rankme=report(
            "results/report/{model}/rankme_profile.png",
            caption="../report/eval_rankme.rst",
            category="4. Evaluation",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "RankMe profile"},
        ),
        probes=report(
            "results/report/{model}/probe_curves.png",
            caption="../report/eval_probes.rst",
            category="4. Evaluation",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "probe curves"},
        ),
        cross_mpp=report(
            "results/report/{model}/cross_mpp.png",
            caption="../report/eval_cross_mpp.rst",
            category="4. Evaluation",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "cross-mpp matrix"},
        ),
        centroids=report(
            "results/report/{model}/centroids.png",
            caption="../report/eval_centroids.rst",
            category="4. Evaluation",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "centroid similarity"},
        ),
        pca=report(
            "results/report/{model}/hierarchy_pca.png",
            caption="../report/eval_pca.rst",
            category="4. Evaluation",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "PCA parents and children"},
        ),
        segmentation=report(
            "results/report/{model}/segmentation_examples.png",
            caption="../report/eval_segmentation.rst",
            category="4. Evaluation",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "segmentation examples"},
        ),
        tables=report(
            "results/report/{model}/tables.html",
            caption="../report/eval_tables.rst",
            category="4. Evaluation",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "tables"},
        ),
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
        records=evaluation_records(),
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
