"""Settings of region aggregation: the mixer's shape, its pretraining (``aggregate.pretrain``) and
AB-MIL (``aggregate.abmil``). A light module, so the workflow checks them while it parses the config,
before any job, without importing torch."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from magflow.config import SettingError, check_field_types, requirement, settings_from_dict
from magflow.defaults import schema_defaults
from magflow.errors import ConfigError
from magflow.sheet_lines import row_lines

OBJECTIVES = ("mem", "cmem")
CONTRASTIVE_LOSSES = ("paper-eq5", "simclr")   # magflow.aggregate.cmem: the paper's Eq. 5, or SimCLR's NT-Xent
AGGREGATORS = ("paper-eq7", "projection")      # magflow.aggregate.abmil_model
ATTENTIONS = ("tanh", "gated")
PRECISIONS = ("auto", "bf16", "fp32")
SELECT = ("val_loss", "last")
PRETRAIN_KEY = "aggregate.pretrain"
ABMIL_KEY = "aggregate.abmil"
_MODEL_KEYS = ("width", "depth", "heads", "mlp_ratio", "n_cls", "max_grid", "decoder_depth", "decoder_width")


@dataclass(frozen=True)
@schema_defaults("aggregate.pretrain")
class MixerConfig:
    """Shape of the mixer; the paper's model is the default (the config schema's ``aggregate.pretrain``), the
    demo shrinks width and depth."""

    in_dim: int                      # tile embedding dim
    width: int
    depth: int
    heads: int
    mlp_ratio: float                 # SwiGLU hidden = width · mlp_ratio
    n_cls: int
    n_scales: int = 3
    max_grid: int                    # positions per axis, in finest-scale cells
    decoder_depth: int               # MEM decoder (magflow.aggregate.mem), not part of the encoder
    decoder_width: int | None        # None: same as width

    def __post_init__(self) -> None:
        for key in ("in_dim", "width", "depth", "heads", "n_cls", "n_scales", "max_grid"):
            if getattr(self, key) < 1:
                raise ConfigError(f"mixer.{key} = {getattr(self, key)}: must be at least 1")
        if self.width % self.heads:
            raise ConfigError(f"mixer.width ({self.width}) must be a multiple of mixer.heads ({self.heads})")
        if self.decoder_depth < 0:
            raise ConfigError(f"mixer.decoder_depth = {self.decoder_depth}: must be 0 or more")
        if self.decoder_dim % self.heads:
            raise ConfigError(f"mixer.decoder_width ({self.decoder_dim}) must be a multiple of mixer.heads "
                              f"({self.heads})")

    @property
    def decoder_dim(self) -> int:
        return self.decoder_width or self.width

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
@schema_defaults("aggregate.pretrain")
class MixerTrainConfig:
    """The paper's mixer and MEM settings by default (the config schema's ``aggregate.pretrain``); the demo
    overrides width, depth and iterations."""

    objective: str                     # or "cmem"
    # mixer (magflow.aggregate.mixer.MixerConfig; in_dim and n_scales come from the region files)
    width: int
    depth: int
    heads: int
    mlp_ratio: float
    n_cls: int
    max_grid: int
    decoder_depth: int
    decoder_width: int | None
    # MEM / CMEM
    mask_ratio: float
    dihedral: bool                     # random rotations and flips (all scales alike), MEM and CMEM
    context: int                       # CMEM: c of the c×c context the two t×t views come from
    projector_hidden: int
    projector_dim: int
    tau: float
    contrastive_weight: float
    contrastive_loss: str              # CMEM: the paper's Eq. 5 (positive not in the denominator) or "simclr"
    # optimisation
    batch_size: int
    iterations: int
    warmup_iters: int
    base_lr: float                     # at reference_batch; lr = base_lr · batch_size / reference_batch
    reference_batch: int
    min_lr: float
    weight_decay: float
    betas: tuple[float, float]
    clip_grad: float | None
    # run
    seed: int
    precision: str                     # bf16 autocast on CUDA, fp32 on CPU
    checkpoint_every: int
    log_every: int
    num_workers: int                   # DataLoader processes cutting regions (2-8 on a GPU node)

    def __post_init__(self) -> None:
        check_field_types(self, PRETRAIN_KEY)
        need = requirement(self, PRETRAIN_KEY)
        need(self.objective in OBJECTIVES, "objective", f"must be one of {OBJECTIVES}")
        for key in ("width", "depth", "heads", "n_cls", "max_grid", "projector_hidden", "projector_dim"):
            need(getattr(self, key) >= 1, key, "must be >= 1")
        need(self.width % self.heads == 0, "width", f"must be a multiple of heads {self.heads}")
        need(self.mlp_ratio > 0, "mlp_ratio", "must be > 0")
        need(self.decoder_depth >= 0, "decoder_depth", "must be >= 0")
        need(self.decoder_width is None or (self.decoder_width >= 1 and self.decoder_width % self.heads == 0),
             "decoder_width", f"must be null (the width) or a positive multiple of heads {self.heads}")
        need(0 < self.mask_ratio < 1, "mask_ratio", "must be in (0, 1) (the paper sweeps 0.25/0.5/0.75)")
        need(self.context >= 1, "context", "must be >= 1 (and >= t; the paper uses 3, 7 or 11)")
        need(self.tau > 0, "tau", "must be > 0 (the contrastive temperature)")
        need(self.contrastive_weight >= 0, "contrastive_weight", "must be >= 0")
        need(self.contrastive_loss in CONTRASTIVE_LOSSES, "contrastive_loss",
             f"must be one of {CONTRASTIVE_LOSSES} (the paper's Eq. 5, or SimCLR's symmetric NT-Xent)")
        need(self.batch_size >= 1, "batch_size", "must be >= 1")
        need(self.batch_size >= 2 or self.objective == "mem", "batch_size", "must be >= 2 for CMEM (NT-Xent)")
        need(self.iterations >= 1, "iterations", "must be >= 1")
        need(self.warmup_iters >= 0, "warmup_iters", "must be >= 0")
        need(self.base_lr > 0, "base_lr", "must be > 0")
        need(self.reference_batch >= 1, "reference_batch", "must be >= 1")
        need(self.min_lr >= 0, "min_lr", "must be >= 0 (the lr at the end of the cosine)")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "must be two numbers in [0, 1)")
        need(self.clip_grad is None or self.clip_grad > 0, "clip_grad",
             "must be > 0 (the max gradient norm) or null (no clipping)")
        need(self.seed >= 0, "seed", "must be >= 0")
        need(self.precision in PRECISIONS, "precision", f"must be one of {PRECISIONS}")
        need(self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1")
        need(self.log_every >= 1, "log_every", "must be >= 1")
        need(self.num_workers >= 0, "num_workers", "must be >= 0")

    def validate(self, section: str = PRETRAIN_KEY) -> MixerTrainConfig:
        """The rules between fields that the workflow checks before any job: no warm-up longer than the
        run. Returns ``self``."""
        requirement(self, section)(self.warmup_iters <= self.iterations, "warmup_iters",
                                   f"must be <= iterations {self.iterations} (the lr warm-up)")
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MixerTrainConfig:
        """Defaults overridden by ``values``; an unknown key is refused with the allowed ones."""
        return settings_from_dict(cls, values, PRETRAIN_KEY)

    def mixer(self, in_dim: int, n_scales: int) -> MixerConfig:
        return MixerConfig(in_dim=in_dim, n_scales=n_scales, **{k: getattr(self, k) for k in _MODEL_KEYS})

    @property
    def lr(self) -> float:
        """The peak lr: the linear scaling rule against ``reference_batch``."""
        return self.base_lr * self.batch_size / self.reference_batch


@dataclass(frozen=True)
@schema_defaults("aggregate.abmil")
class MILConfig:
    """The ``abmil`` config block (see config/README.md); the defaults are the config schema's
    (``aggregate.abmil``)."""

    lr: float
    weight_decay: float
    label_smoothing: float
    epochs: int
    freeze_epochs: int
    layer_decay: float
    groups_per_batch: int              # the paper batches 32 groups (patients)
    aggregator: str                    # Eq. 7: pool the instances themselves; "projection": Linear+ReLU first
    attention: str                     # Eq. 8's wᵀ tanh(V z); "gated": Ilse et al.'s gated attention
    hidden_dim: int | None             # the projection's width (aggregator "projection" only)
    attn_dim: int                      # the aggregator's hidden size (V: attn_dim × D); the paper's is 16
    dropout: float
    select: str
    seeds: tuple[int, ...]
    test_fraction: float
    val_fraction: float

    def __post_init__(self) -> None:
        check_field_types(self, ABMIL_KEY)
        need = requirement(self, ABMIL_KEY)
        need(self.lr > 0, "lr", "must be > 0")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(0 <= self.label_smoothing < 1, "label_smoothing", "must be in [0, 1)")
        need(self.epochs >= 1, "epochs", "must be >= 1")
        need(self.freeze_epochs >= 0, "freeze_epochs", "must be >= 0 (epochs with the encoder frozen)")
        need(0 < self.layer_decay <= 1, "layer_decay", "must be in (0, 1] (1: no layer-wise decay)")
        need(self.groups_per_batch >= 1, "groups_per_batch", "must be >= 1")
        need(self.aggregator in AGGREGATORS, "aggregator",
             f"must be one of {AGGREGATORS} (the paper's Eq. 7, or a projection before pooling)")
        need(self.attention in ATTENTIONS, "attention", f"must be one of {ATTENTIONS}")
        need(self.hidden_dim is None or self.hidden_dim >= 1, "hidden_dim", "must be >= 1 or null (no projection)")
        need(self.aggregator != "projection" or self.hidden_dim is not None, "hidden_dim",
             "must be set (the projection's width) with aggregator: projection")
        need(self.attn_dim >= 1, "attn_dim", "must be >= 1")
        need(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")
        need(self.select in SELECT, "select", f"must be one of {SELECT}")
        need(len(self.seeds) >= 1, "seeds", "must name at least one seed")
        need(all(seed >= 0 for seed in self.seeds) and len(set(self.seeds)) == len(self.seeds), "seeds",
             "must be distinct integers >= 0")
        need(0 < self.test_fraction < 1, "test_fraction", "must be in (0, 1)")
        need(0 < self.val_fraction < 1 and self.test_fraction + self.val_fraction < 1, "val_fraction",
             f"must be in (0, 1) with test_fraction + val_fraction < 1 (test_fraction is {self.test_fraction})")

    @property
    def projection_dim(self) -> int | None:
        """The width instances are projected to before pooling; None for the paper's Eq. 7."""
        return self.hidden_dim if self.aggregator == "projection" else None

    def aggregator_record(self) -> dict[str, Any]:
        """What an AB-MIL record says of its aggregator."""
        return {"form": self.aggregator, "attention": self.attention, "hidden_size": self.attn_dim,
                "projection_dim": self.projection_dim, "groups_per_batch": self.groups_per_batch}

    def validate(self, section: str = ABMIL_KEY) -> MILConfig:
        """The rules between fields that the workflow checks before any job: the frozen epochs fit in the
        run. Returns ``self``."""
        requirement(self, section)(self.freeze_epochs <= self.epochs, "freeze_epochs",
                                   f"must be <= epochs {self.epochs}")
        return self

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> MILConfig:
        """Defaults overridden by ``values``; an unknown key is refused with the allowed ones."""
        return settings_from_dict(cls, values, ABMIL_KEY)

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None) -> MILConfig:
        """The workflow's check of ``aggregate.abmil``: :meth:`from_dict`, then :meth:`validate`."""
        return cls.from_dict(values).validate()


def check_mixer_sweep(pretrain: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]], source: str, t: int,
                      scales: Sequence[float], lines: Sequence[int] | None = None) -> None:
    """Every mixer run's settings (``aggregate.pretrain`` with the run's row of the sweep ``source`` on
    top) before any job: a bad value from the sheet is named by its line in the file and its column, one
    from ``aggregate.pretrain`` by its key. Also CMEM's context against the regions' side ``t``
    (``aggregate.t``) and the mixer's position grid against the region's extent in finest-scale cells.
    ``lines`` are the rows' line numbers (:func:`magflow.sheet_lines.data_lines`; without them row i is
    line i + 2)."""
    ratio = max(scales) / min(scales) if scales else 1.0
    cells = round(t * ratio)  # a region's side in finest-scale cells: its token positions run up to it
    for number, (name, row) in zip(row_lines(lines, len(runs)), runs.items()):
        where = f"aggregate.runs: {source}, line {number} (mixer run {name})"
        try:
            config = MixerTrainConfig.from_dict({**pretrain, **row}).validate()
        except SettingError as error:
            if error.name in row:
                raise error.reworded(f"{where}, column {error.name}") from None
            raise ConfigError(f"{error} (for {where})") from None
        if config.objective == "cmem" and config.context < t:
            raise ConfigError(f"{where}, column context: CMEM's context must be >= aggregate.t {t} (the two t x t "
                              f"views are cut from the c x c context), got {config.context}")
        if config.max_grid < cells:
            raise ConfigError(f"{PRETRAIN_KEY}.max_grid: must be >= {cells}, the side of an aggregate.t = {t} region "
                              f"in finest-scale cells ({max(scales):g} to {min(scales):g} mpp), got {config.max_grid}")


TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a task names a record file
NOT_TASKS = ("slide_id", "path", "split", "mpp", "group", "annotation", "brightfield_check", "method", "Average")


def check_tasks(tasks: Sequence[str] | None, entries: Mapping[str, Any], sheet: str) -> list[str]:
    """``aggregate.tasks`` checked against the slide sheet before any job: each a label column (``label``
    or an extra column the sheet was read with) with a value for at least one slide. (A task with one
    class is recorded as skipped, with the reason, by its ``abmil`` jobs.) ``entries`` are the sheet's
    rows by slide id (:class:`magflow.sheet.SlideEntry`)."""
    tasks = list(tasks or [])
    if not tasks:
        raise ConfigError("aggregate.tasks: empty; name at least one slide sheet column with slide labels, e.g. [label]")
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"aggregate.tasks: {tasks} names a column twice; list each task once")
    for task in tasks:
        if not isinstance(task, str) or not TASK_NAME.match(task) or task in NOT_TASKS:
            raise ConfigError(f"aggregate.tasks: {task!r} cannot be a task: use a label column of the slide sheet "
                              "(letters, digits, '.', '_' and '-'; not one of " + ", ".join(NOT_TASKS) + ")")
        if all(entry.value(task) is None for entry in entries.values()):
            raise ConfigError(f"aggregate.tasks: the slide sheet {sheet} has no value in a column `{task}` (absent or "
                              f"empty); add and fill that column (slide labels, at least two classes), or remove "
                              f"{task!r} from aggregate.tasks")
    return tasks


TARGET_RULES = ("all", "region_embed", "pretrain_mixer", "abmil", "abmil_table", "report_index")
TARGET_FOLDERS = ("results/regions/", "results/mixers/", "results/abmil/")
TARGET_FILES = ("results/report/abmil_auroc.html", "results/report/abmil_auroc.tsv",
                "results/report/abmil_design.png", "results/report/index.html")


def aggregation_wanted(encoder: str | None, targets: Iterable[str] | None) -> bool:
    """Whether a Snakemake invocation plans region aggregation: an ``aggregate.encoder`` is set and the
    targets asked for (none, or unknown: None, the default target ``all``) include it: ``all``, an
    aggregation rule, one of its outputs, or the report index (which shows the AB-MIL table). Otherwise
    its settings go unused and unchecked, so a runs sheet without the encoder's run still plans
    pretraining, say."""
    if encoder is None:
        return False
    targets = [str(target) for target in targets or []]
    if not targets:
        return True
    for target in targets:
        rule = target.split(":", 1)[0]  # --target-jobs gives rule:wildcards
        path = os.path.normpath(os.path.relpath(target) if os.path.isabs(target) else target)
        if rule in TARGET_RULES or path in TARGET_FILES or path.startswith(TARGET_FOLDERS):
            return True
    return False
