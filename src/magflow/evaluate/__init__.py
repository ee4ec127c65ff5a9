"""Evaluation metrics: small pure functions on numpy arrays, one module per metric family.

Embeddings are N×D arrays, labels integer class ids, slides (and groups) string ids, one per row.
Every constant is written in the module that uses it (RankMe ε, kNN k and metric, probe solver and
C grid, K-Means seed and n_init, seeds of the splits).
"""

from magflow.evaluate.centroids import CentroidSimilarity, centroid_similarity
from magflow.evaluate.classification import (
    ClassificationScores,
    MeanStd,
    ScoreSummary,
    classification_scores,
    mean_std,
    summarize,
)
from magflow.evaluate.clustering import KMEANS_N_INIT, KMEANS_SEED, ClusteringScores, kmeans_scores
from magflow.evaluate.consistency import (
    COARSE_MPP,
    FINE_MPP,
    HierarchyConsistency,
    hierarchy_consistency,
    parent_rows,
)
from magflow.evaluate.cross_mpp import CrossMpp, LabelledTiles, cross_mpp_matrix, retained_percent
from magflow.evaluate.knn import KNN_K, KNN_METRIC, KNN_WEIGHTS, knn_predict, knn_scores, l2_normalize
from magflow.evaluate.label_metrics import LabelMetrics, label_metrics
from magflow.evaluate.linear_probe import (
    C_GRID,
    LinearProbe,
    fit_linear_probe,
    fit_probe_on_split,
    linear_probe_scores,
)
from magflow.evaluate.rankme import (
    RANKME_EPS,
    RANKME_MAX_N,
    RankMe,
    rankme,
    rankme_by_mpp,
    rankme_of_singular_values,
    shared_rows,
)
from magflow.evaluate.segmentation import SegmentationScores, segmentation_scores, tile_label_map
from magflow.evaluate.splits import SEEDS, SlideSplit, Split, seeded_splits, split_slides, split_units

__all__ = [
    "COARSE_MPP",
    "C_GRID",
    "FINE_MPP",
    "KMEANS_N_INIT",
    "KMEANS_SEED",
    "KNN_K",
    "KNN_METRIC",
    "KNN_WEIGHTS",
    "RANKME_EPS",
    "RANKME_MAX_N",
    "SEEDS",
    "CentroidSimilarity",
    "ClassificationScores",
    "ClusteringScores",
    "CrossMpp",
    "HierarchyConsistency",
    "LabelMetrics",
    "LabelledTiles",
    "LinearProbe",
    "MeanStd",
    "RankMe",
    "ScoreSummary",
    "SegmentationScores",
    "SlideSplit",
    "Split",
    "centroid_similarity",
    "classification_scores",
    "cross_mpp_matrix",
    "fit_linear_probe",
    "fit_probe_on_split",
    "hierarchy_consistency",
    "kmeans_scores",
    "knn_predict",
    "knn_scores",
    "l2_normalize",
    "label_metrics",
    "linear_probe_scores",
    "mean_std",
    "parent_rows",
    "rankme",
    "rankme_by_mpp",
    "rankme_of_singular_values",
    "retained_percent",
    "seeded_splits",
    "segmentation_scores",
    "shared_rows",
    "split_slides",
    "split_units",
    "summarize",
    "tile_label_map",
]
