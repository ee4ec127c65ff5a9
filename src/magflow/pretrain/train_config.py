"""The training settings of a DINOv2 or MAD run (``pretrain.train``): a light module, so the workflow
checks them while it parses the config, before any job, without importing torch."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from magflow.config import SettingError, check_field_types, requirement, settings_from_dict
from magflow.defaults import schema_defaults
from magflow.sheet_lines import row_lines

PRECISIONS = ("auto", "bf16", "fp32")
LR_SCALING = ("linear", "sqrt")
TARGET_STRATEGIES = ("centering", "sinkhorn")  # DINOv2's teacher targets (magflow.pretrain.targets)
VIEWS = ("exact", "dinov2")  # magflow.pretrain.views, magflow.pretrain.dinov2_views
KEY = "train"  # how a bad value is named when the caller gives no config key (e.g. pretrain.train)


@dataclass(frozen=True)
@schema_defaults("pretrain.train")
class TrainConfig:
    """DINOv2 defaults for a ViT-S/16; iteration counts follow DINOv2's 1250-iteration epochs. Every field's
    default is the config schema's (``pretrain.train``, :func:`magflow.defaults.schema_defaults`)."""

    # architecture
    arch: str                                     # a timm ViT name
    arch_kwargs: dict[str, Any]                   # timm overrides, e.g. {"depth": 2}
    patch_size: int
    reg_tokens: int                               # 0: the timm model's own count
    drop_path: float
    # views
    global_size: int
    local_size: int
    n_local_crops: int
    views: str                                    # or "dinov2": random-resized crops of a source patch at the drawn mpp
    source_size: int                              # dinov2 views: px of the source patch cut at the drawn mpp
    global_crops_scale: tuple[float, float]       # dinov2 views: crop-area fractions of the source patch
    local_crops_scale: tuple[float, float]
    # heads and losses
    prototypes: int
    head_hidden_dim: int
    head_bottleneck_dim: int
    ibot: bool
    ibot_separate_head: bool
    mask_probability: float
    mask_ratio: tuple[float, float]
    target_strategy: str                          # or "sinkhorn"
    ibot_weight: float
    koleo_weight: float
    student_temp: float
    teacher_temp: float
    warmup_teacher_temp: float
    teacher_temp_warmup_iters: int
    # optimisation
    batch_size: int                               # per process; the global batch is batch_size · world size
    iterations: int
    base_lr: float                                # at reference_batch; scaled to the global batch
    reference_batch: int
    lr_scaling: str                               # lr = base_lr · (global/reference), or its square root
    min_lr: float
    warmup_iters: int
    weight_decay: float
    weight_decay_end: float
    momentum: float
    momentum_end: float
    layer_decay: float
    patch_embed_lr_mult: float
    freeze_last_layer_iters: int
    clip_grad: float
    # run
    seed: int
    precision: str                                # bf16 autocast on CUDA, fp32 on CPU
    compile: bool
    checkpoint_every: int
    log_every: int
    num_workers: int                              # DataLoader processes reading tiles

    def __post_init__(self) -> None:
        self.check_ranges()

    def check_ranges(self, section: str = KEY) -> None:
        """Every field on its own: types, NaN, ranges, enums, sizes against ``patch_size``; errors name
        ``section.field``. Rules between the budget's fields are :meth:`validate`'s."""
        check_field_types(self, section)
        need = requirement(self, section)
        need(self.patch_size >= 1, "patch_size", "must be >= 1 (px)")
        patches = f"must be a multiple of patch_size {self.patch_size} (and at least that many px)"
        need(self.global_size >= self.patch_size and self.global_size % self.patch_size == 0, "global_size", patches)
        need(self.local_size >= self.patch_size and self.local_size % self.patch_size == 0, "local_size", patches)
        need(self.reg_tokens >= 0, "reg_tokens", "must be >= 0 (0: the timm model's own count)")
        need(0 <= self.drop_path < 1, "drop_path", "must be in [0, 1)")
        need(self.n_local_crops >= 0, "n_local_crops", "must be >= 0")
        need(self.views in VIEWS, "views", f"must be one of {VIEWS}")
        need(self.source_size >= 1, "source_size", "must be >= 1 (px)")
        for key in ("global_crops_scale", "local_crops_scale"):
            scale = getattr(self, key)
            need(len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1, key,
                 "must be [lo, hi] area fractions with 0 < lo <= hi <= 1")
        if self.views == "dinov2":
            need(self.source_size >= self.global_size, "source_size",
                 f"must be >= global_size {self.global_size} (the source patch the crops are cut from)")
            need(self.local_size <= self.global_size, "local_size",
                 f"must be <= global_size {self.global_size} (views: dinov2)")
        for key in ("prototypes", "head_hidden_dim", "head_bottleneck_dim"):
            need(getattr(self, key) >= 1, key, "must be >= 1")
        need(0 <= self.mask_probability <= 1, "mask_probability", "must be a probability in [0, 1]")
        need(len(self.mask_ratio) == 2 and 0 <= self.mask_ratio[0] <= self.mask_ratio[1] <= 1, "mask_ratio",
             "must be [lo, hi] fractions of the patches with 0 <= lo <= hi <= 1")
        need(self.target_strategy in TARGET_STRATEGIES, "target_strategy", f"must be one of {TARGET_STRATEGIES}")
        for key in ("ibot_weight", "koleo_weight"):
            need(getattr(self, key) >= 0, key, "must be >= 0 (0 turns the term off)")
        for key in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
            need(getattr(self, key) > 0, key, "must be > 0 (a softmax temperature)")
        need(self.teacher_temp_warmup_iters >= 0, "teacher_temp_warmup_iters", "must be >= 0")
        need(self.batch_size >= 2, "batch_size", "must be >= 2 (KoLeo needs a neighbour)")
        need(self.iterations >= 1, "iterations", "must be >= 1")
        need(self.base_lr >= 0, "base_lr", "must be >= 0 (0 trains nothing)")
        need(self.reference_batch >= 1, "reference_batch", "must be >= 1")
        need(self.lr_scaling in LR_SCALING, "lr_scaling", f"must be one of {LR_SCALING}")
        need(self.min_lr >= 0, "min_lr", "must be >= 0 (the lr at the end of the cosine)")
        need(self.warmup_iters >= 0, "warmup_iters", "must be >= 0")
        for key in ("weight_decay", "weight_decay_end"):
            need(getattr(self, key) >= 0, key, "must be >= 0")
        for key in ("momentum", "momentum_end"):
            need(0 <= getattr(self, key) <= 1, key, "must be in [0, 1] (the teacher's EMA momentum)")
        need(0 < self.layer_decay <= 1, "layer_decay", "must be in (0, 1] (1: no layer-wise decay)")
        need(self.patch_embed_lr_mult >= 0, "patch_embed_lr_mult", "must be >= 0")
        need(self.freeze_last_layer_iters >= 0, "freeze_last_layer_iters", "must be >= 0")
        need(self.clip_grad > 0, "clip_grad",
             "must be > 0 (the max gradient norm per submodule; 0 would zero every gradient)")
        need(self.seed >= 0, "seed", "must be >= 0")
        need(self.precision in PRECISIONS, "precision", f"must be one of {PRECISIONS}")
        need(self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1")
        need(self.log_every >= 1, "log_every", "must be >= 1")
        need(self.num_workers >= 0, "num_workers", "must be >= 0")

    def validate(self, section: str = KEY) -> TrainConfig:
        """The rules between fields that a run's budget sets (what the workflow checks before any job):
        no warm-up or freeze longer than the run. Returns ``self``."""
        need = requirement(self, section)
        budget = f"must be <= iterations {self.iterations}"
        need(self.warmup_iters <= self.iterations, "warmup_iters", f"{budget} (the lr warm-up)")
        need(self.teacher_temp_warmup_iters <= self.iterations, "teacher_temp_warmup_iters",
             f"{budget} (or the teacher never reaches teacher_temp)")
        need(self.freeze_last_layer_iters <= self.iterations, "freeze_last_layer_iters",
             f"{budget} (or the head's last layer never trains)")
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any], section: str = KEY) -> TrainConfig:
        """Defaults overridden by ``values``; an unknown key is refused with the allowed ones, and a bad
        value named ``section.key``."""
        return settings_from_dict(cls, values, section)

    @classmethod
    def from_config(cls, values: dict[str, Any], section: str = "pretrain.train") -> TrainConfig:
        """The workflow's check of a ``pretrain.train`` block: :meth:`from_dict`, then :meth:`validate`."""
        return cls.from_dict(values, section).validate(section)

    def lr(self, global_batch: int) -> float:
        """The peak lr for a global batch: base_lr scaled from reference_batch (DINOv2 scales by sqrt)."""
        ratio = global_batch / self.reference_batch
        return self.base_lr * (ratio if self.lr_scaling == "linear" else math.sqrt(ratio))


def check_run_columns(train: TrainConfig, runs: Mapping[str, Mapping[str, Any]], source: str,
                      lines: Sequence[int] | None = None) -> None:
    """The columns of a runs sheet that are training settings (``seed``), each applied to ``train`` and
    checked, before any job: a bad one is named by its line in the sheet and its column. ``runs`` maps each
    run's name to its row, in the sheet's order; ``lines`` are the rows' line numbers in the file
    (:func:`magflow.sheet_lines.data_lines`; without them row i is line i + 2)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for number, (name, row) in zip(row_lines(lines, len(runs)), runs.items()):
        values = {key: value.item() if hasattr(value, "item") else value  # numpy scalars as Python numbers
                  for key, value in row.items() if key in names}
        try:
            dataclasses.replace(train, **values)
        except SettingError as error:
            raise error.reworded(f"pretrain.runs: {source}, line {number} (run {name}), column {error.name}") from None
