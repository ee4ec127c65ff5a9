"""DINOv2-style pretraining: the whole training loop, shared by continuous magnification sampling and MAD.

What an iteration's items and views are, and which loss terms they give, is the strategy's
(:mod:`magflow.pretrain.strategy`): a sampler gives DINOv2 with magnification sampling, a
:class:`~magflow.pretrain.mad_config.MadConfig` magnification-aware distillation
(:mod:`magflow.pretrain.mad`). Everything else (EMA teacher, centres, schedules, DDP, checkpoints,
export) is the same for both.

One process per GPU under torchrun (DDP on the student; the EMA teacher, the centres and every random
draw are kept identical or independent across ranks by construction), or one CPU process. Resuming from
``checkpoint.pt`` continues the schedules, optimizer, teacher and centres, and since every random draw
of iteration i comes from seeds of (seed, rank, i) (see :mod:`magflow.pretrain.seeds`), an interrupted
and resumed run equals an uninterrupted one bit for bit on the same hardware and world size.

SIGTERM or SIGUSR1 (:mod:`magflow.preemption`) stops the run at the next iteration boundary: every
process agrees on the iteration, rank 0 writes ``checkpoint.pt``, and each process exits with 128 + the
signal number; rerunning the same command resumes.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from magflow import preemption, provenance
from magflow.pretrain import distributed, seeds
from magflow.pretrain.backbone import build_backbone
from magflow.pretrain.clipping import clip_grad_norm_per_submodule
from magflow.pretrain.dinov2 import DINOv2
from magflow.pretrain.ema import update_teacher
from magflow.pretrain.export import architecture, export_teacher
from magflow.pretrain.head import DINOHead
from magflow.pretrain.mad import MadStrategy
from magflow.pretrain.mad_config import MadConfig
from magflow.pretrain.param_groups import apply_schedules, build_param_groups
from magflow.pretrain.schedules import build_schedules
from magflow.pretrain.strategy import SamplingStrategy, Strategy, config_identity
from magflow.pretrain.targets import Center
from magflow.pretrain.train_config import TrainConfig
from magflow.sampling.sampler import Sampler
from magflow.training import (CHECKPOINT, autocast, check_finite, resolve_precision, resume_state,
                              save_checkpoint, stop_iteration)
from magflow.writable import make_output_dir

log = logging.getLogger(__name__)

LOSS_TERMS = ("dino", "ibot", "koleo")


@dataclass
class Step:
    """What one iteration did on this process, for callers that watch training (``on_step``)."""

    iteration: int
    losses: dict[str, float]      # averaged over processes
    schedule: dict[str, float]
    batch: dict[str, Any]         # this process's draw: target_mpp, source_mpp, scale, tile, slide (MAD: mad_data)
    mpp: torch.Tensor             # the mpp every view of each item was cut at (MAD: each item's finest views)


@dataclass
class TrainResult:
    iteration: int                # iterations done
    student: DINOv2
    teacher: DINOv2
    weights: Path | None          # the exported teacher backbone, once the run is complete
    model_card: Path | None


def build_model(config: TrainConfig, ibot: bool | None = None) -> DINOv2:
    """Student (and, copied, teacher) network; ``ibot`` overrides ``config.ibot`` (MAD decides it itself)."""
    ibot = config.ibot if ibot is None else ibot
    backbone = build_backbone(config.arch, img_size=config.global_size, patch_size=config.patch_size,
                              drop_path_rate=config.drop_path, reg_tokens=config.reg_tokens, **config.arch_kwargs)

    def head() -> DINOHead:
        return DINOHead(backbone.embed_dim, config.prototypes, config.head_hidden_dim, config.head_bottleneck_dim)

    if not ibot:
        backbone.mask_token.requires_grad_(False)  # unused without masks; DDP refuses parameters without grads
    return DINOv2(backbone, head(), head() if ibot and config.ibot_separate_head else None)


def initial_model(config: TrainConfig, ibot: bool | None = None) -> DINOv2:
    """The student before iteration 0, seeded by ``config.seed``: the same on every process, and the init control."""
    torch.manual_seed(config.seed)
    return build_model(config, ibot)


def _run_identity(config: TrainConfig, world_size: int, strategy: Strategy) -> dict[str, Any]:
    return {"config": config_identity(config), "world_size": world_size, **strategy.identity()}


def _model_card(config: TrainConfig, student: DINOv2, strategy: Strategy, world_size: int,
                precision: str) -> dict[str, Any]:
    record = provenance.collect(config=dataclasses.asdict(config), seeds={"train": config.seed}, precision=precision)
    global_batch = config.batch_size * world_size
    card = strategy.card()
    views = card.pop("views")
    return {
        "model": card.pop("model"),
        "architecture": architecture(student.backbone, config.arch, config.arch_kwargs, config.global_size),
        **card,
        "iterations": config.iterations,
        "seed": config.seed,
        "commit": record["git"],
        "precision": precision,
        "training": {"world_size": world_size, "batch_size_per_process": config.batch_size,
                     "global_batch": global_batch, "peak_lr": config.lr(global_batch),
                     "lr_rule": f"{config.lr_scaling}: base_lr {config.base_lr:g} at batch {config.reference_batch}",
                     "views": views, "ibot": strategy.uses_ibot, "config": dataclasses.asdict(config)},
        "provenance": record,
    }


def train(config: TrainConfig, stores: Sequence[str | os.PathLike[str]], sampler: Sampler | MadConfig,
          out_dir: str | os.PathLike[str], *, stop_at: int | None = None, progress: bool = True,
          device: str | torch.device | None = None, on_step: Callable[[Step], None] | None = None) -> TrainResult:
    """Pretrain (or resume) a DINOv2 ViT on the train tile ``stores`` with target mpps drawn from ``sampler``,
    or, given a :class:`MadConfig`, with magnification-aware distillation on the MAD tile set's ``stores``.

    Writes ``out_dir``/checkpoint.pt every ``checkpoint_every`` iterations and when it stops, TensorBoard
    logs under ``out_dir``/tensorboard (rank 0), and once all iterations are done the teacher backbone
    (``teacher_backbone.safetensors``) and ``model_card.json``. ``stop_at`` ends this call early at that
    iteration (a later call resumes), e.g. to fit a job's time limit. Under torchrun, every process calls
    this with the same arguments.
    """
    process = distributed.start(device)
    # handlers first: the data loader's workers, forked later, inherit them instead of dying of the signal
    with preemption.stop_signals() as stop_request:
        try:
            return _train(config, stores, sampler, Path(out_dir), stop_at, progress, process, on_step, stop_request)
        finally:
            distributed.stop(process)


def _train(config: TrainConfig, stores: Sequence[str | os.PathLike[str]], sampler: Sampler | MadConfig, out_dir: Path,
           stop_at: int | None, progress: bool, process: distributed.Process,
           on_step: Callable[[Step], None] | None, stop_request: preemption.StopRequest) -> TrainResult:
    device, rank = process.device, process.rank
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # the sharp teacher softmax makes denormal gradients: CPU matmuls ~5x slower
    make_output_dir(out_dir)
    strategy: Strategy = MadStrategy(config, stores, sampler) if isinstance(sampler, MadConfig) else \
        SamplingStrategy(config, stores, sampler)
    precision = resolve_precision(config.precision, device)
    global_batch = config.batch_size * process.world_size
    identity = _run_identity(config, process.world_size, strategy)

    student = initial_model(config, strategy.uses_ibot).to(device)
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
    if (state := resume_state(checkpoint_path, identity)) is not None:
        student.load_state_dict(state["student"])
        teacher.load_state_dict(state["teacher"])
        centers.load_state_dict(state["centers"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["iteration"])
        if process.is_main:
            log.info("resuming from %s at iteration %d", checkpoint_path, start)
    stop = stop_iteration(start, config.iterations, stop_at)
    if process.is_main:
        log.info("%s: %d process(es) on %s, %s: global batch %d, peak lr %.3g; %s; iterations %d to %d",
                 strategy.name, process.world_size, device, precision, global_batch, config.lr(global_batch),
                 strategy.describe(), start, stop)

    if config.compile:
        student.backbone.compile()
        teacher.backbone.compile()
    model = DistributedDataParallel(student, device_ids=[device] if device.type == "cuda" else None) \
        if process.world_size > 1 else student
    mixed_precision = autocast(precision, device)
    batches = strategy.batches(config.batch_size, config.seed, rank, config.iterations)
    loader = DataLoader(batches, batch_size=None, sampler=range(start, stop), num_workers=config.num_workers,
                        pin_memory=device.type == "cuda")
    writer = SummaryWriter(out_dir / "tensorboard", purge_step=start or None) if process.is_main else None
    bar = tqdm(total=stop - start, desc="pretrain", unit="it", disable=not (progress and process.is_main))
    interval_mpps: list[torch.Tensor] = []
    interval_views: list[dict[str, torch.Tensor]] = []  # per view, the mpp it shows (SamplingStrategy.view_stats)
    interval_start = time.perf_counter()

    def save(done: int) -> None:
        if process.is_main:
            save_checkpoint(checkpoint_path, {
                "iteration": done, "identity": identity, "student": student.state_dict(),
                "teacher": teacher.state_dict(), "centers": centers.state_dict(),
                "optimizer": optimizer.state_dict()})

    try:
        for iteration, batch in zip(range(start, stop), loader):
            seeds.seed_globals(config.seed, rank, iteration)
            schedule = schedules.at(iteration)
            apply_schedules(optimizer, schedule["lr"], schedule["weight_decay"], schedule["last_layer_lr"])

            inputs = strategy.prepare(batch, iteration, rank, device)
            mpp = inputs.mpp
            with mixed_precision:
                terms = strategy.losses(inputs, teacher, model, centers, schedule["teacher_temp"])
            loss = terms["dino"] + config.ibot_weight * terms["ibot"] + config.koleo_weight * terms["koleo"]
            reported = distributed.mean_over_processes(torch.stack([terms[k].detach().float() for k in LOSS_TERMS]
                                                                   + [loss.detach().float()]))
            losses = dict(zip((*LOSS_TERMS, "total"), reported.tolist()))
            check_finite(losses, iteration, checkpoint_path,
                         {"lr": schedule["lr"], "teacher temperature": schedule["teacher_temp"]},
                         "lower base_lr, lengthen warmup_iters or check the tiles")

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_grad_norm_per_submodule(student, config.clip_grad)
            optimizer.step()
            update_teacher(teacher, student, schedule["momentum"])

            interval_mpps.append(mpp)
            interval_views.append(strategy.view_stats(inputs) if isinstance(strategy, SamplingStrategy) else {})
            done = iteration + 1
            if done % config.log_every == 0 or done == stop:
                mpps = distributed.gather_from_processes(torch.cat(interval_mpps).to(device)).cpu()
                shown = {tag: distributed.gather_from_processes(torch.cat([v[tag] for v in interval_views]).to(device))
                         .cpu() for tag in interval_views[0]}
                if writer is not None:
                    images_per_s = len(mpps) / (time.perf_counter() - interval_start)
                    _log_scalars(writer, iteration, losses, schedule, images_per_s, mpps)
                    for tag, values in shown.items():
                        writer.add_histogram(tag, values.numpy().astype(np.float64), iteration)
                    log.info("iteration %d/%d: %s; lr %.3g, %.1f img/s, mpp %.3g-%.3g", done, stop,
                             ", ".join(f"{name} {value:.4f}" for name, value in losses.items()),
                             schedule["lr"], images_per_s, float(mpps.min()), float(mpps.max()))
                interval_mpps, interval_views, interval_start = [], [], time.perf_counter()
            if on_step is not None:
                on_step(Step(iteration, losses, schedule, batch, mpp))
            saved = done % config.checkpoint_every == 0 or done == stop
            if saved:
                save(done)
            bar.update()
            bar.set_postfix(loss=f"{losses['total']:.4f}", mpp=f"{float(mpp.mean()):.2f}")
            if done < stop and (signum := _stop_signal(stop_request, device)) is not None:
                if not saved:
                    save(done)
                if process.world_size > 1:
                    dist.barrier()  # no process exits (and makes torchrun stop the others) before the checkpoint
                raise preemption.preempted("pretraining", signum, f"after iteration {done} of {config.iterations}",
                                           checkpoint_path)
    finally:
        bar.close()
        if writer is not None:
            writer.close()

    weights = card = None
    if stop == config.iterations and process.is_main:
        weights, card = export_teacher(teacher.backbone, out_dir,
                                       _model_card(config, student, strategy, process.world_size, precision))
        log.info("exported the teacher backbone to %s", weights)
    return TrainResult(stop, student, teacher, weights, card)


def _stop_signal(stop: preemption.StopRequest, device: torch.device) -> int | None:
    """The stop signal if any process received one: every process then stops at the same iteration."""
    if not dist.is_initialized():
        return stop.signum
    flag = torch.tensor([stop.signum or 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


def _log_scalars(writer: SummaryWriter, iteration: int, losses: dict[str, float], schedule: dict[str, float],
                 images_per_s: float, mpps: torch.Tensor) -> None:
    for name, value in losses.items():
        writer.add_scalar(f"loss/{name}", value, iteration)
    for name in ("lr", "last_layer_lr", "weight_decay", "momentum", "teacher_temp"):
        writer.add_scalar(f"schedule/{name}", schedule[name], iteration)
    writer.add_scalar("throughput/images_per_s", images_per_s, iteration)
    writer.add_histogram("mpp/items", mpps.numpy().astype(np.float64), iteration)
