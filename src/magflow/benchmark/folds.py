"""Patient-disjoint, label-stratified folds, made as the BRACS-MS authors make them.

From the authors' evaluation code (``dataloaders.py``, ``get_bracs_wsi_splits``):

- patients are listed in the order they first appear in the sorted image file names, and a patient's
  label is the label of its first slide (in that order), itself the label of that slide's first image;
- fold f's test patients are split f of ``StratifiedKFold(5, shuffle=True, random_state=seed)`` over
  the patients and their labels;
- its dev patients are the held-out part of split 0 of ``StratifiedKFold(5, shuffle=True,
  random_state=seed)`` (the same seed) over the remaining patients; the rest are train.
"""

from __future__ import annotations

from collections.abc import Sequence

N_FOLDS = 5
INNER_FOLDS = 5
SPLITS = ("train", "dev", "test")


def patient_folds(patients: Sequence[str], labels: Sequence[int], seed: int,
                  n_folds: int = N_FOLDS, inner_folds: int = INNER_FOLDS) -> list[dict[str, str]]:
    """Per fold, each patient's split (``train``, ``dev`` or ``test``); ``patients`` in the authors' order."""
    from sklearn.model_selection import StratifiedKFold

    if len(set(patients)) != len(patients):
        raise ValueError("each patient must be listed once")
    outer = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = []
    for rest_idx, test_idx in outer.split(list(patients), list(labels)):
        rest = [patients[i] for i in rest_idx]
        inner = StratifiedKFold(n_splits=inner_folds, shuffle=True, random_state=seed)
        _, dev_idx = next(iter(inner.split(rest, [labels[i] for i in rest_idx])))
        split = {patient: "train" for patient in rest}
        split.update({rest[i]: "dev" for i in dev_idx})
        split.update({patients[i]: "test" for i in test_idx})
        folds.append(split)
    return folds


def first_label_per_group(image_names: Sequence[str], slides: Sequence[str], groups: Sequence[str],
                          label_ids: Sequence[int]) -> tuple[list[str], list[int]]:
    """Groups (patients) in order of first appearance over the sorted image names, and each group's
    label: that of its first slide, whose label is that of its first image."""
    slide_label: dict[str, int] = {}
    group_label: dict[str, int] = {}
    for _, slide, group, label in sorted(zip(image_names, slides, groups, label_ids)):
        slide_label.setdefault(slide, label)
        group_label.setdefault(group, slide_label[slide])
    return list(group_label), list(group_label.values())
