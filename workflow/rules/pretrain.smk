# DINOv2 pretraining with magnification sampling, or MAD for strategy `mad` rows: one job per run (strategy x
# seed, from pretrain.runs). A job asking for more than one GPU launches torchrun (DDP) inside itself.


rule pretrain:
    input:
        stores=train_stores,
        sampler=run_sampler,
    output:
        weights="results/models/{run}/teacher_backbone.safetensors",
        card="results/models/{run}/model_card.json",
        timm=multiext("results/models/{run}/timm/", "config.json", "model.safetensors", "README.md"),
    params:
        out_dir=lambda wildcards: f"results/models/{wildcards.run}",
        train=run_train,
        seed=run_seed,
        mad=run_mad,
        gpus=PRETRAIN["gpus"],
    threads: lambda wildcards: max(1, run_train(wildcards)["num_workers"])
    resources:
        **rule_resources("pretrain", gpu=PRETRAIN["gpus"]),
    log:
        "logs/pretrain/{run}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/pretrain.py"
