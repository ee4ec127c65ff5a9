"""File names of the per-model report: a light module, so the workflow can list them without importing
the plotting code."""

FIGURES = {  # key → file name in the model's report folder
    "rankme": "rankme_profile.png",
    "probes": "probe_curves.png",
    "cross_mpp": "cross_mpp.png",
    "centroids": "centroids.png",
    "pca": "hierarchy_pca.png",
    "segmentation": "segmentation_examples.png",
}
TABLES = "tables.html"  # the model's tables as one page
TABLE_FILES = {  # key → TSV in the model's report folder: the rows that tables.html and index.html show
    "scores": "scores.tsv",
    "robustness": "robustness.tsv",
    "consistency": "consistency.tsv",
    "status": "metric_status.tsv",
}
LABELS = {  # key of FIGURES, or "tables" → its label in the Snakemake report (its caption: eval_{key}.rst)
    "rankme": "RankMe profile",
    "probes": "probe curves",
    "cross_mpp": "cross-mpp matrix",
    "centroids": "centroid similarity",
    "pca": "PCA parents and children",
    "segmentation": "segmentation examples",
    "tables": "tables",
}
