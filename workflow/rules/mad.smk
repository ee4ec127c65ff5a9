# The MAD paper's evaluation: each model embeds every tile of the mad tile set on its own grids (one job per
# model), mad_eval writes Tables 3-5 and Fig 3 for it, and mad_report puts every model's tables side by side.
# Models: MAD_MODELS (evaluate.mad.max_models; each run with its ~init control); slides: those with a label mask.


rule mad_embed:
    input:
        unpack(embed_model_files),
        stores=expand("results/tiles/{tileset}/{slide_id}.h5", tileset=MAD_EVAL.tileset, slide_id=MAD_SLIDES),
        masks=eval_mask_files,
    output:
        tiles="results/mad/{model}/tiles.h5",
    params:
        model=embed_model,
        masks=EVAL_MASKS,
        splits=EVAL_CONTEXT["sheet_splits"],
        batch_size=EMBED["batch_size"],
        mean_patch=EMBED["mean_patch"],
    resources:
        **rule_resources("mad_embed", gpu=EMBED["gpus"]),
    log:
        "logs/mad/{model}/embed.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/mad_embed.py"


rule mad_eval:
    input:
        tiles="results/mad/{model}/tiles.h5",
        masks=eval_mask_files,
    output:
        json="results/mad/{model}/mad.json",
        maps=directory("results/mad/{model}/segmentation"),
        pca=report(
            "results/report/{model}/mad_pca.png",
            caption="../report/mad_pca.rst",
            category="4. Evaluation",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "MAD Fig 3: PCA of parents and children"},
        ),
    params:
        masks=EVAL_MASKS,
        settings=dict(EVALUATE["mad"]),
    resources:
        **rule_resources("mad_eval"),
    log:
        "logs/mad/{model}/eval.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/mad_eval.py"


rule mad_report:
    input:
        records=expand("results/mad/{model}/mad.json", model=MAD_MODELS),
    output:
        html=report(
            "results/report/mad_tables.html",
            caption="../report/mad_tables.rst",
            category="4. Evaluation",
            subcategory="All models",
        ),
        tsv="results/report/mad_tables.tsv",
        table3="results/report/mad_table3.tsv",
        table5="results/report/mad_table5.tsv",
    params:
        models=MAD_MODELS,
    resources:
        **rule_resources("mad_report"),
    log:
        "logs/mad/report.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/mad_report.py"
