# Evaluation: every model's embeddings, one job per model and metric family (the families:
# magflow.evaluate.registry; their figures and the index page: report.smk).
# A run's control ({run}~init) gets the records of the families the registry marks for controls; it is drawn in
# its run's figures.
from magflow.evaluate.registry import MASK_METRICS, PLAIN_METRICS


rule evaluate:
    input:
        embeddings=eval_embeddings,
    output:
        json="results/eval/{model}/{metric}.json",
    params:
        metric=lambda wildcards: wildcards.metric,
        context=EVAL_CONTEXT,
    wildcard_constraints:
        metric="|".join(PLAIN_METRICS),
    resources:
        **rule_resources("evaluate"),
    log:
        "logs/eval/{model}/{metric}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluate.py"


# The families that read the slides' label masks (segmentation) also write their maps into a folder.
use rule evaluate as evaluate_segmentation with:
    input:
        embeddings=eval_embeddings,
        masks=eval_mask_files,
    output:
        json="results/eval/{model}/{metric}.json",
        maps=directory("results/eval/{model}/{metric}"),
    wildcard_constraints:
        metric="|".join(MASK_METRICS),
