# Mixed-magnification region aggregation: regions of frozen tile embeddings (one job per slide), mixing
# encoders pretrained with MEM / CMEM (one job per row of aggregate.runs), AB-MIL per method (one job computes
# every task of aggregate.tasks, one record per task), one table and the design-decision figure.


rule region_embed:
    input:
        unpack(embed_model_files),
        store=f"results/tiles/{AGGREGATE['tileset']}/{{slide_id}}.h5",
    output:
        regions="results/regions/{model}/{slide_id}.h5",
    params:
        model=embed_model,
        t=AGGREGATE["t"],
        batch_size=AGGREGATE["batch_size"],
        scales=lambda wildcards: AGG_SCALES,
        mean_patch=EMBED["mean_patch"],
    resources:
        **rule_resources("region_embed", gpu=AGGREGATE["gpus"]),
    log:
        "logs/regions/{model}/{slide_id}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/region_embed.py"


rule pretrain_mixer:
    input:
        regions=mixer_regions,
    output:
        weights="results/mixers/{model}/{mixer}/mixer_encoder.safetensors",
        card="results/mixers/{model}/{mixer}/model_card.json",
    params:
        out_dir=lambda wildcards: f"results/mixers/{wildcards.model}/{wildcards.mixer}",
        train=mixer_train,
    resources:
        **rule_resources("pretrain_mixer", gpu=AGGREGATE["gpus"]),
    log:
        "logs/mixers/{model}/{mixer}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/pretrain_mixer.py"


rule abmil:
    input:
        unpack(abmil_inputs),
    output:
        records=expand("results/abmil/{{model}}/{{method}}/{task}.json", task=AGG_TASKS),
    params:
        method=lambda wildcards: SLIDE_METHODS[wildcards.method],
        tasks={task: PLAN.slides.column(task) for task in AGG_TASKS},
        groups=EVAL_CONTEXT["groups"],
        sheet_splits=EVAL_CONTEXT["sheet_splits"],
        split_mode=EVALUATE["splits"],
        mil=AGGREGATE["abmil"],
        mixer_train=AGGREGATE["pretrain"],
    resources:
        **rule_resources("abmil", gpu=AGGREGATE["gpus"]),
    log:
        "logs/abmil/{model}/{method}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/abmil.py"


rule abmil_table:
    input:
        records=expand("results/abmil/{model}/{method}/{task}.json", model=AGG_ENCODER, method=list(SLIDE_METHODS),
                       task=AGG_TASKS),
    output:
        tsv="results/report/abmil_auroc.tsv",
        html=report(
            "results/report/abmil_auroc.html",
            caption="../report/abmil_auroc.rst",
            category="5. Slide level",
        ),
        design=report(
            "results/report/abmil_design.png",
            caption="../report/abmil_design.rst",
            category="5. Slide level",
        ),
    resources:
        **rule_resources("abmil_table"),
    log:
        "logs/abmil/table.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/abmil_table.py"
