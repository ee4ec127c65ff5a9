"""Evaluation metrics: small pure functions on numpy arrays, one module per metric family (the families:
``magflow.evaluate.registry``), each with the function that writes its record from an embeddings file.

Embeddings are N×D arrays, labels integer class ids, slides (and groups) string ids, one per row.
Every constant is written in the module that uses it (RankMe ε, kNN k and metric, probe solver and
C grid, K-Means seed and n_init, seeds of the splits).
"""

from magflow.lazy import lazy_namespace

__all__ = lazy_namespace(__name__, {
    "centroids": ["CentroidSimilarity", "centroid_similarity"],
    "cms": ["CMS_C_GRID", "CMS_K_GRID", "CMS_TRAIN_MPPS", "CmsResult", "cms_protocol"],
    "clustering": ["KMEANS_N_INIT", "KMEANS_SEED", "ClusteringScores", "kmeans_scores"],
    "consistency": ["COARSE_MPP", "FINE_MPP", "HierarchyConsistency", "hierarchy_consistency", "parent_rows"],
    "cross_mpp": ["CrossMpp", "LabelledTiles", "cross_mpp_matrix", "retained_percent"],
    "data": ["l2_normalize"],
    "probes": ["C_GRID", "KNN_K", "KNN_METRIC", "KNN_WEIGHTS", "ClassificationScores", "LabelMetrics", "LinearProbe",
               "MeanStd", "ScoreSummary", "classification_scores", "fit_linear_probe", "fit_probe_on_split",
               "knn_predict", "knn_scores", "label_metrics", "linear_probe_scores", "mean_std", "summarize"],
    "rankme": ["RANKME_DEFINITIONS", "RANKME_EPS", "RANKME_MAX_N", "RankMe", "rankme", "rankme_by_definition",
               "rankme_by_mpp", "rankme_covariance", "rankme_of_singular_values", "shared_rows"],
    "registry": ["METRIC_NAMES"],
    "robustness": ["MagnificationRobustness", "RI_K_CANDIDATES", "robustness_index"],
    "segmentation": ["SegmentationScores", "segmentation_scores", "tile_label_map"],
    "splits": ["SEEDS", "SlideSplit", "Split", "distinct_splits", "seeded_splits", "split_slides", "split_units"],
})
