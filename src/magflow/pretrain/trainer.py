"""DINOv2 pretraining with continuous magnification sampling: the whole training loop.

One process per GPU under torchrun (DDP on the student; the EMA teacher, the centres and every random
draw are kept identical or independent across ranks by construction), or one CPU process. Resuming from
``checkpoint.pt`` continues the schedules, optimizer, teacher and centres, and since every random draw
of iteration i comes from seeds of (seed, rank, i) (see :mod:`magflow.pretrain.seeds`), an interrupted
and resumed run equals an uninterrupted one bit for bit on the same hardware and world size.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from magflow import provenance
from magflow.errors import ConfigError, MagflowError
from magflow.pretrain import distributed, seeds
from magflow.pretrain.backbone import build_backbone
from magflow.pretrain.checkpoint import CHECKPOINT, check_same_run, load_checkpoint, save_checkpoint
from magflow.pretrain.data import IterationBatches, TileSource
from magflow.pretrain.dinov2 import TARGET_STRATEGIES, DINOv2, dinov2_losses
from magflow.pretrain.ema import update_teacher
from magflow.pretrain.export import architecture, export_teacher
from magflow.pretrain.head import DINOHead
from magflow.pretrain.masking import mask_global_crops
from magflow.pretrain.param_groups import apply_schedules, build_param_groups
from magflow.pretrain.schedules import build_schedules
from magflow.pretrain.targets import Center
from magflow.pretrain.views import ViewConfig, make_views, view_mpps
from magflow.sampling.record import to_record
from magflow.sampling.sampler import Sampler

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32")
LR_SCALING = ("linear", "sqrt")
OPERATIONAL = ("checkpoint_every", "log_every", "num_workers", "compile")  # may change when resuming
LOSS_TERMS = ("dino", "ibot", "koleo")


class NonFiniteLossError(MagflowError):
    """A loss term became NaN or infinite; the run stops before the bad step is applied."""


@dataclass(frozen=True)
class TrainConfig:
    """DINOv2 defaults for a ViT-S/16; iteration counts follow DINOv2's 1250-iteration epochs."""

    # architecture
    arch: str = "vit_small_patch16_224"           # a timm ViT name
    arch_kwargs: dict[str, Any] = field(default_factory=dict)  # timm overrides, e.g. {"depth": 2}
    patch_size: int = 16
    reg_tokens: int = 0                           # 0: the timm model's own count
    drop_path: float = 0.1
    # views
    global_size: int = 224
    local_size: int = 96
    n_local_crops: int = 8
    # heads and losses
    prototypes: int = 65536
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    ibot: bool = True
    ibot_separate_head: bool = False
    mask_probability: float = 0.5
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    target_strategy: str = "centering"            # or "sinkhorn"
    ibot_weight: float = 1.0
    koleo_weight: float = 0.1
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    teacher_temp_warmup_iters: int = 37_500
    # optimisation
    batch_size: int = 64                          # per process; the global batch is batch_size · world size
    iterations: int = 125_000
    base_lr: float = 1e-3                         # at reference_batch; scaled to the global batch
    reference_batch: int = 1024
    lr_scaling: str = "linear"                    # lr = base_lr · (global/reference), or its square root
    min_lr: float = 1e-6
    warmup_iters: int = 12_500
    weight_decay: float = 0.04
    weight_decay_end: float = 0.2
    momentum: float = 0.992
    momentum_end: float = 1.0
    layer_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2
    freeze_last_layer_iters: int = 1_250
    clip_grad: float = 3.0
    # run
    seed: int = 0
    precision: str = "auto"                       # bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False
    checkpoint_every: int = 2_500
    log_every: int = 10
    num_workers: int = 4                          # DataLoader processes reading tiles

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"train.{key}: {what}, got {getattr(self, key)!r}")

        patches = f"must be a multiple of patch_size {self.patch_size}"
        need(self.global_size % self.patch_size == 0, "global_size", patches)
        need(self.local_size % self.patch_size == 0, "local_size", patches)
        need(self.precision in PRECISIONS, "precision", f"must be one of {PRECISIONS}")
        need(self.target_strategy in TARGET_STRATEGIES, "target_strategy", f"must be one of {TARGET_STRATEGIES}")
        need(self.lr_scaling in LR_SCALING, "lr_scaling", f"must be one of {LR_SCALING}")
        need(self.batch_size >= 2, "batch_size", "must be >= 2 (KoLeo needs a neighbour)")
        need(self.iterations >= 1, "iterations", "must be >= 1")
        need(self.warmup_iters >= 0, "warmup_iters", "must be >= 0 (a warmup longer than the run is cut to it)")
        need(self.n_local_crops >= 0, "n_local_crops", "must be >= 0")
        need(self.seed >= 0, "seed", "must be >= 0")
        need(self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1")
        need(self.log_every >= 1, "log_every", "must be >= 1")
        need(self.num_workers >= 0, "num_workers", "must be >= 0")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Defaults overridden by ``values``; an unknown key is refused with the allowed ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ConfigError(f"unknown train key(s) {unknown}; allowed: {', '.join(names)}")
        values = dict(values)
        if "mask_ratio" in values:
            values["mask_ratio"] = tuple(values["mask_ratio"])
        return cls(**values)

    def lr(self, global_batch: int) -> float:
        """The peak lr for a global batch: base_lr scaled from reference_batch (DINOv2 scales by sqrt)."""
        ratio = global_batch / self.reference_batch
        return self.base_lr * (ratio if self.lr_scaling == "linear" else math.sqrt(ratio))


@dataclass
class Step:
    """What one iteration did on this process, for callers that watch training (``on_step``)."""

    iteration: int
    losses: dict[str, float]      # averaged over processes
    schedule: dict[str, float]
    batch: dict[str, Any]         # this process's draw: target_mpp, source_mpp, scale, tile, slide
    mpp: torch.Tensor             # the mpp every view of each item was cut at


@dataclass
class TrainResult:
    iteration: int                # iterations done
    student: DINOv2
    teacher: DINOv2
    weights: Path | None          # the exported teacher backbone, once the run is complete
    model_card: Path | None


def build_model(config: TrainConfig) -> DINOv2:
    backbone = build_backbone(config.arch, img_size=config.global_size, patch_size=config.patch_size,
                              drop_path_rate=config.drop_path, reg_tokens=config.reg_tokens, **config.arch_kwargs)

    def head() -> DINOHead:
        return DINOHead(backbone.embed_dim, config.prototypes, config.head_hidden_dim, config.head_bottleneck_dim)

    if not config.ibot:
        backbone.mask_token.requires_grad_(False)  # unused without masks; DDP refuses parameters without grads
    return DINOv2(backbone, head(), head() if config.ibot and config.ibot_separate_head else None)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def _run_identity(config: TrainConfig, world_size: int, sampler: Sampler, source: TileSource) -> dict[str, Any]:
    record = to_record(sampler)
    return {
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k not in OPERATIONAL},
        "world_size": world_size,
        "sampler": {k: record[k] for k in ("strategy", "kernel", "lam", "mpp", "range", "support", "p", "cell_lo",
                                           "cell_hi")},
        "stores": [str(p) for p in source.paths],
    }


def _model_card(config: TrainConfig, student: DINOv2, sampler: Sampler, source: TileSource, world_size: int,
                precision: str) -> dict[str, Any]:
    record = provenance.collect(config=dataclasses.asdict(config), seeds={"train": config.seed}, precision=precision)
    global_batch = config.batch_size * world_size
    return {
        "model": "DINOv2 teacher backbone pretrained with magnification sampling (magflow)",
        "architecture": architecture(student.backbone, config.arch, config.arch_kwargs, config.global_size),
        "strategy": sampler.config.strategy,
        "sampler": to_record(sampler),
        "data": {"stores": source.stores, "tiles": len(source), "scales": source.scales,
                 "source_px": source.source_px},
        "iterations": config.iterations,
        "seed": config.seed,
        "commit": record["git"],
        "precision": precision,
        "training": {"world_size": world_size, "batch_size_per_process": config.batch_size,
                     "global_batch": global_batch, "peak_lr": config.lr(global_batch),
                     "lr_rule": f"{config.lr_scaling}: base_lr {config.base_lr:g} at batch {config.reference_batch}",
                     "views": {"global_size": config.global_size, "local_size": config.local_size,
                               "n_local_crops": config.n_local_crops, "magnification": "one mpp per item, all views"},
                     "config": dataclasses.asdict(config)},
        "provenance": record,
    }


def train(config: TrainConfig, stores: Sequence[str | os.PathLike[str]], sampler: Sampler,
          out_dir: str | os.PathLike[str], *, stop_at: int | None = None, progress: bool = True,
          device: str | torch.device | None = None, on_step: Callable[[Step], None] | None = None) -> TrainResult:
    """Pretrain (or resume) a DINOv2 ViT on the train tile ``stores`` with target mpps drawn from ``sampler``.

    Writes ``out_dir``/checkpoint.pt every ``checkpoint_every`` iterations and when it stops, TensorBoard
    logs under ``out_dir``/tensorboard (rank 0), and once all iterations are done the teacher backbone
    (``teacher_backbone.safetensors``) and ``model_card.json``. ``stop_at`` ends this call early at that
    iteration (a later call resumes), e.g. to fit a job's time limit. Under torchrun, every process calls
    this with the same arguments.
    """
    process = distributed.start(device)
    try:
        return _train(config, stores, sampler, Path(out_dir), stop_at, progress, process, on_step)
    finally:
        distributed.stop(process)


def _train(config: TrainConfig, stores: Sequence[str | os.PathLike[str]], sampler: Sampler, out_dir: Path,
           stop_at: int | None, progress: bool, process: distributed.Process,
           on_step: Callable[[Step], None] | None) -> TrainResult:
    device, rank = process.device, process.rank
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # the sharp teacher softmax makes denormal gradients: CPU matmuls ~5x slower
    out_dir.mkdir(parents=True, exist_ok=True)
    views_config = ViewConfig(config.global_size, config.local_size, config.n_local_crops)
    source = TileSource(stores, config.global_size)
    views_config.check(source.source_px)
    source.check_serves(sampler.distribution)
    precision = resolve_precision(config.precision, device)
    global_batch = config.batch_size * process.world_size
    identity = _run_identity(config, process.world_size, sampler, source)

    torch.manual_seed(config.seed)  # the same initial weights on every process
    student = build_model(config).to(device)
    teacher = copy.deepcopy(student).requires_grad_(False).eval()  # eval: no drop path in the teacher
    centers = torch.nn.ModuleDict({"dino": Center(config.prototypes), "ibot": Center(config.prototypes)}).to(device)
    heads = [student.dino_head] + ([student.ibot_head] if student.ibot_head is not None else [])
    optimizer = torch.optim.AdamW(build_param_groups(student.backbone, heads, config.layer_decay,
                                                     config.patch_embed_lr_mult), betas=(0.9, 0.999))
    schedules = build_schedules(
        config.iterations, 1, lr=config.lr(global_batch), min_lr=config.min_lr, warmup_epochs=config.warmup_iters,
        weight_decay=config.weight_decay, weight_decay_end=config.weight_decay_end, momentum=config.momentum,
        momentum_end=config.momentum_end, teacher_temp=config.teacher_temp,
        warmup_teacher_temp=config.warmup_teacher_temp, warmup_teacher_temp_epochs=config.teacher_temp_warmup_iters,
        freeze_last_layer_epochs=config.freeze_last_layer_iters)

    start, checkpoint_path = 0, out_dir / CHECKPOINT
    if checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path)
        check_same_run(state["identity"], identity, checkpoint_path)
        student.load_state_dict(state["student"])
        teacher.load_state_dict(state["teacher"])
        centers.load_state_dict(state["centers"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["iteration"])
        if process.is_main:
            log.info("resuming from %s at iteration %d", checkpoint_path, start)
    stop = max(start, config.iterations if stop_at is None else min(stop_at, config.iterations))
    if process.is_main:
        log.info("%d process(es) on %s, %s: global batch %d, peak lr %.3g; %d tiles at %s mpp; iterations %d to %d",
                 process.world_size, device, precision, global_batch, config.lr(global_batch), len(source),
                 source.scales, start, stop)

    if config.compile:
        student.backbone.compile()
        teacher.backbone.compile()
    model = DistributedDataParallel(student, device_ids=[device] if device.type == "cuda" else None) \
        if process.world_size > 1 else student
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    batches = IterationBatches(source, sampler.distribution, config.batch_size, config.seed, rank, config.iterations)
    loader = DataLoader(batches, batch_size=None, sampler=range(start, stop), num_workers=config.num_workers,
                        pin_memory=device.type == "cuda")
    writer = SummaryWriter(out_dir / "tensorboard", purge_step=start or None) if process.is_main else None
    grid = (config.global_size // config.patch_size,) * 2
    bar = tqdm(total=stop - start, desc="pretrain", unit="it", disable=not (progress and process.is_main))
    interval_mpps: list[torch.Tensor] = []
    interval_start = time.perf_counter()

    try:
        for iteration, batch in zip(range(start, stop), loader):
            seeds.seed_globals(config.seed, rank, iteration)
            schedule = schedules.at(iteration)
            apply_schedules(optimizer, schedule["lr"], schedule["weight_decay"], schedule["last_layer_lr"])

            mpp = view_mpps(batch["target_mpp"], batch["source_mpp"], config.global_size, source.source_px)
            views = make_views(batch["images"].to(device, non_blocking=True), batch["source_mpp"], mpp,
                               views_config, seeds.torch_generator(config.seed, rank, iteration, "views"))
            masks = indices = None
            if config.ibot:
                mask_batch = mask_global_crops(2 * config.batch_size, grid,
                                               seeds.numpy_rng(config.seed, rank, iteration, "masks"),
                                               config.mask_probability, config.mask_ratio)
                masks, indices = mask_batch.masks.to(device), mask_batch.indices.to(device)

            with autocast:
                teacher_out = teacher.teacher(views.global_crops, indices)
                student_out = model(views.global_crops, views.local_crops, masks, indices)
                terms = dinov2_losses(student_out, teacher_out, masks, config.batch_size, centers,
                                      schedule["teacher_temp"], config.target_strategy, config.student_temp)
            loss = terms["dino"] + config.ibot_weight * terms["ibot"] + config.koleo_weight * terms["koleo"]
            reported = distributed.mean_over_processes(torch.stack([terms[k].detach().float() for k in LOSS_TERMS]
                                                                   + [loss.detach().float()]))
            losses = dict(zip((*LOSS_TERMS, "total"), reported.tolist()))
            if not all(math.isfinite(value) for value in losses.values()):
                named = ", ".join(f"{name}={value:.6g}" for name, value in losses.items())
                last = f"{checkpoint_path} holds the last checkpoint" if checkpoint_path.is_file() else \
                    "no checkpoint was written yet"
                raise NonFiniteLossError(
                    f"non-finite loss at iteration {iteration}: {named} (lr {schedule['lr']:.3g}, teacher "
                    f"temperature {schedule['teacher_temp']:.3g}); the step was not applied and {last}: lower "
                    "base_lr, lengthen warmup_iters or check the tiles")

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), config.clip_grad)
            optimizer.step()
            update_teacher(teacher, student, schedule["momentum"])

            interval_mpps.append(mpp)
            done = iteration + 1
            if done % config.log_every == 0 or done == stop:
                mpps = distributed.gather_from_processes(torch.cat(interval_mpps).to(device)).cpu()
                if writer is not None:
                    images_per_s = len(mpps) / (time.perf_counter() - interval_start)
                    _log_scalars(writer, iteration, losses, schedule, images_per_s, mpps)
                    log.info("iteration %d/%d: %s; lr %.3g, %.1f img/s, mpp %.3g-%.3g", done, stop,
                             ", ".join(f"{name} {value:.4f}" for name, value in losses.items()),
                             schedule["lr"], images_per_s, float(mpps.min()), float(mpps.max()))
                interval_mpps, interval_start = [], time.perf_counter()
            if on_step is not None:
                on_step(Step(iteration, losses, schedule, batch, mpp))
            if process.is_main and (done % config.checkpoint_every == 0 or done == stop):
                save_checkpoint(checkpoint_path, {
                    "iteration": done, "identity": identity, "student": student.state_dict(),
                    "teacher": teacher.state_dict(), "centers": centers.state_dict(),
                    "optimizer": optimizer.state_dict()})
            bar.update()
            bar.set_postfix(loss=f"{losses['total']:.4f}", mpp=f"{float(mpp.mean()):.2f}")
    finally:
        bar.close()
        if writer is not None:
            writer.close()

    weights = card = None
    if stop == config.iterations and process.is_main:
        weights, card = export_teacher(teacher.backbone, out_dir,
                                       _model_card(config, student, sampler, source, process.world_size, precision))
        log.info("exported the teacher backbone to %s", weights)
    return TrainResult(stop, student, teacher, weights, card)


def _log_scalars(writer: SummaryWriter, iteration: int, losses: dict[str, float], schedule: dict[str, float],
                 images_per_s: float, mpps: torch.Tensor) -> None:
    for name, value in losses.items():
        writer.add_scalar(f"loss/{name}", value, iteration)
    for name in ("lr", "last_layer_lr", "weight_decay", "momentum", "teacher_temp"):
        writer.add_scalar(f"schedule/{name}", schedule[name], iteration)
    writer.add_scalar("throughput/images_per_s", images_per_s, iteration)
    writer.add_histogram("mpp/items", mpps.numpy().astype(np.float64), iteration)
