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
TABLES = "tables.html"
