# Embeddings at any magnification: one job per model (run or external baseline) and tile set.


rule embed:
    input:
        unpack(embed_model_files),
        stores=expand("results/tiles/{{tileset}}/{slide_id}.h5", slide_id=SLIDE_IDS),
        labels=embed_label_files,
    output:
        embeddings="results/embeddings/{model}/{tileset}.h5",
    params:
        model=embed_model,
        labels=PLAN.slides.label_sources(),
        settings=EMBED,
    threads: max(1, EMBED["workers"])
    resources:
        **rule_resources("embed", gpu=EMBED["gpus"]),
    log:
        "logs/embed/{model}/{tileset}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/embed.py"
