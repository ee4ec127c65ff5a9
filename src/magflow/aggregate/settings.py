"""Settings of region aggregation: the mixer's shape, its pretraining (``aggregate.pretrain``) and
AB-MIL (``aggregate.abmil``). A light module, so the workflow checks them while it parses the config,
before any job, without importing torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from magflow.config import settings_from_dict
from magflow.errors import ConfigError
from magflow.evaluate.splits import SEEDS, TEST_FRACTION, VAL_FRACTION

OBJECTIVES = ("mem", "cmem")
PRECISIONS = ("auto", "bf16", "fp32")
SELECT = ("val_loss", "last")
_MODEL_KEYS = ("width", "depth", "heads", "mlp_ratio", "n_cls", "max_grid", "decoder_depth", "decoder_width")


@dataclass(frozen=True)
class MixerConfig:
    """Shape of the mixer; the paper's model is the default, the demo shrinks width and depth."""

    in_dim: int                      # tile embedding dim
    width: int = 1536
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 2.0           # SwiGLU hidden = width · mlp_ratio
    n_cls: int = 4
    n_scales: int = 3
    max_grid: int = 64               # positions per axis, in finest-scale cells
    decoder_depth: int = 2           # MEM decoder (magflow.aggregate.mem), not part of the encoder
    decoder_width: int | None = None  # None: same as width

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
class MixerTrainConfig:
    """The paper's mixer and MEM settings by default; the demo overrides width, depth and iterations."""

    objective: str = "mem"             # or "cmem"
    # mixer (magflow.aggregate.mixer.MixerConfig; in_dim and n_scales come from the region files)
    width: int = 1536
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 2.0
    n_cls: int = 4
    max_grid: int = 64
    decoder_depth: int = 2
    decoder_width: int | None = None
    # MEM / CMEM
    mask_ratio: float = 0.5
    dihedral: bool = True              # random rotations and flips (all scales alike), MEM and CMEM
    context: int = 7                   # CMEM: c of the c×c context the two t×t views come from
    projector_hidden: int = 4096
    projector_dim: int = 256
    tau: float = 0.2
    contrastive_weight: float = 1.0
    # optimisation
    batch_size: int = 256
    iterations: int = 10_000
    warmup_iters: int = 1_000
    base_lr: float = 1.5e-4            # at reference_batch; lr = base_lr · batch_size / reference_batch
    reference_batch: int = 256
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    clip_grad: float | None = 3.0
    # run
    seed: int = 0
    precision: str = "auto"            # bf16 autocast on CUDA, fp32 on CPU
    checkpoint_every: int = 500
    log_every: int = 10
    num_workers: int = 0               # DataLoader processes cutting regions (2-8 on a GPU node)

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"aggregate.pretrain.{key}: {what}, got {getattr(self, key)!r}")

        need(self.objective in OBJECTIVES, "objective", f"must be one of {OBJECTIVES}")
        need(self.precision in PRECISIONS, "precision", f"must be one of {PRECISIONS}")
        need(0 < self.mask_ratio < 1, "mask_ratio", "must be in (0, 1) (the paper sweeps 0.25/0.5/0.75)")
        need(self.context >= 1, "context", "must be >= 1 (and >= t; the paper uses 3, 7 or 11)")
        need(self.tau > 0, "tau", "must be > 0")
        need(self.batch_size >= 2 or self.objective == "mem", "batch_size", "must be >= 2 for CMEM (NT-Xent)")
        need(self.batch_size >= 1, "batch_size", "must be >= 1")
        need(self.iterations >= 1, "iterations", "must be >= 1")
        need(self.warmup_iters >= 0, "warmup_iters", "must be >= 0 (a warmup longer than the run is cut to it)")
        need(self.base_lr > 0 and self.reference_batch >= 1, "base_lr", "must be > 0 with reference_batch >= 1")
        need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "must be two numbers in [0, 1)")
        need(self.clip_grad is None or self.clip_grad > 0, "clip_grad", "must be > 0 or null")
        need(self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1")
        need(self.log_every >= 1, "log_every", "must be >= 1")
        need(self.num_workers >= 0, "num_workers", "must be >= 0")
        self.mixer(1, 1)  # the shape checks

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MixerTrainConfig:
        """Defaults overridden by ``values``; an unknown key is refused with the allowed ones."""
        return settings_from_dict(cls, values, "aggregate.pretrain")

    def mixer(self, in_dim: int, n_scales: int) -> MixerConfig:
        return MixerConfig(in_dim=in_dim, n_scales=n_scales, **{k: getattr(self, k) for k in _MODEL_KEYS})

    @property
    def lr(self) -> float:
        """The peak lr: the linear scaling rule against ``reference_batch``."""
        return self.base_lr * self.batch_size / self.reference_batch


@dataclass(frozen=True)
class MILConfig:
    """The ``abmil`` config block (see config/README.md)."""

    lr: float = 1e-5
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    epochs: int = 20
    freeze_epochs: int = 1
    layer_decay: float = 0.75
    groups_per_batch: int = 1
    hidden_dim: int | None = 256
    attn_dim: int = 128
    dropout: float = 0.25
    select: str = "val_loss"
    seeds: tuple[int, ...] = SEEDS
    test_fraction: float = TEST_FRACTION
    val_fraction: float = VAL_FRACTION

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"aggregate.abmil.{key}: {what}, got {getattr(self, key)!r}")

        need(self.lr > 0, "lr", "must be > 0")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(0 <= self.label_smoothing < 1, "label_smoothing", "must be in [0, 1)")
        need(self.epochs >= 1, "epochs", "must be >= 1")
        need(self.freeze_epochs >= 0, "freeze_epochs", "must be >= 0 (epochs with the encoder frozen)")
        need(0 < self.layer_decay <= 1, "layer_decay", "must be in (0, 1]")
        need(self.groups_per_batch >= 1, "groups_per_batch", "must be >= 1")
        need(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")
        need(self.select in SELECT, "select", f"must be one of {SELECT}")
        need(len(self.seeds) >= 1, "seeds", "must name at least one seed")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> MILConfig:
        """Defaults overridden by ``values``; an unknown key is refused with the allowed ones."""
        return settings_from_dict(cls, values, "aggregate.abmil")
