"""The metric families, one evaluation job each: a light module, so the workflow can list the jobs
without importing the metrics (scikit-learn, matplotlib)."""

METRIC_NAMES: tuple[str, ...] = ("rankme", "probes", "cross_mpp", "clustering", "centroids", "consistency",
                                 "segmentation", "robustness")
