# Evaluation: every model's embeddings, one job per model and metric family (its figures and the index page:
# report.smk).
# A run's control ({run}~init) gets the RankMe, probe and robustness records only; it is drawn in its run's figures.


rule evaluate_rankme:
    input:
        embeddings=eval_embeddings,
    output:
        json="results/eval/{model}/rankme.json",
    params:
        metric="rankme",
        context=EVAL_CONTEXT,
    resources:
        **rule_resources("evaluate"),
    log:
        "logs/eval/{model}/rankme.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluate.py"


rule evaluate_probes:
    input:
        embeddings=eval_embeddings,
    output:
        json="results/eval/{model}/probes.json",
    params:
        metric="probes",
        context=EVAL_CONTEXT,
    resources:
        **rule_resources("evaluate"),
    log:
        "logs/eval/{model}/probes.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluate.py"


rule evaluate_cross_mpp:
    input:
        embeddings=eval_embeddings,
    output:
        json="results/eval/{model}/cross_mpp.json",
    params:
        metric="cross_mpp",
        context=EVAL_CONTEXT,
    resources:
        **rule_resources("evaluate"),
    log:
        "logs/eval/{model}/cross_mpp.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluate.py"


rule evaluate_clustering:
    input:
        embeddings=eval_embeddings,
    output:
        json="results/eval/{model}/clustering.json",
    params:
        metric="clustering",
        context=EVAL_CONTEXT,
    resources:
        **rule_resources("evaluate"),
    log:
        "logs/eval/{model}/clustering.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluate.py"


rule evaluate_centroids:
    input:
        embeddings=eval_embeddings,
    output:
        json="results/eval/{model}/centroids.json",
    params:
        metric="centroids",
        context=EVAL_CONTEXT,
    resources:
        **rule_resources("evaluate"),
    log:
        "logs/eval/{model}/centroids.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluate.py"


rule evaluate_consistency:
    input:
        embeddings=eval_embeddings,
    output:
        json="results/eval/{model}/consistency.json",
    params:
        metric="consistency",
        context=EVAL_CONTEXT,
    resources:
        **rule_resources("evaluate"),
    log:
        "logs/eval/{model}/consistency.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluate.py"


rule evaluate_segmentation:
    input:
        embeddings=eval_embeddings,
        masks=eval_mask_files,
    output:
        json="results/eval/{model}/segmentation.json",
        maps=directory("results/eval/{model}/segmentation"),
    params:
        metric="segmentation",
        context=EVAL_CONTEXT,
    resources:
        **rule_resources("evaluate"),
    log:
        "logs/eval/{model}/segmentation.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluate.py"



rule evaluate_robustness:
    input:
        embeddings=eval_embeddings,
    output:
        json="results/eval/{model}/robustness.json",
    params:
        metric="robustness",
        context=EVAL_CONTEXT,
    resources:
        **rule_resources("evaluate"),
    log:
        "logs/eval/{model}/robustness.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluate.py"
