"""Pretraining the mixing encoder with MEM or CMEM on region files: the whole training loop.

Follows the DINOv2 engine's conventions (``magflow.pretrain.trainer``): AdamW with weight decay off
for norms, biases, position tables and learned tokens; cosine lr with linear warmup, scaled linearly
from ``reference_batch`` (256); every random draw of iteration i from seeds of (seed, i), so a run
stopped at any checkpoint and resumed equals an uninterrupted one; ``checkpoint.pt`` refused on resume
when the run's settings differ. One process (a mixer over frozen embeddings is small next to a ViT on
pixels). When all iterations are done the encoder is exported as ``mixer_encoder.safetensors`` with
``model_card.json`` beside it; ``history.tsv`` has one row of losses per iteration. SIGTERM or SIGUSR1
(:mod:`magflow.preemption`) stops the run at the next iteration boundary with a checkpoint; rerunning
the same command resumes.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from magflow import preemption, provenance
from magflow.aggregate.cmem import CMEM
from magflow.aggregate.data import IterationDraws, RegionSource
from magflow.aggregate.mem import MEM
from magflow.aggregate.mixer import MixerConfig, MixingEncoder
from magflow.aggregate.settings import MixerTrainConfig
from magflow.atomic import atomic_path
from magflow.embed.embed import pick_device
from magflow.errors import ConfigError
from magflow.pretrain import seeds
from magflow.pretrain.schedules import CosineSchedule
from magflow.training import (CHECKPOINT, autocast, check_finite, resolve_precision, resume_state,
                              save_checkpoint, stop_iteration, weight_decay_exempt)
from magflow.weights_file import save_weights
from magflow.writable import make_output_dir

log = logging.getLogger(__name__)

OPERATIONAL = ("checkpoint_every", "log_every", "num_workers")  # may change when resuming
WEIGHTS = "mixer_encoder.safetensors"
CARD = "model_card.json"
HISTORY = "history.tsv"


@dataclass
class MixerTrainResult:
    iteration: int                 # iterations done
    model: nn.Module               # MEM or CMEM (``.encoder`` is the mixing encoder)
    history: list[dict[str, float]]
    weights: Path | None           # the exported encoder, once the run is complete
    model_card: Path | None


def build_objective(config: MixerTrainConfig, in_dim: int, n_scales: int) -> MEM | CMEM:
    mixer = config.mixer(in_dim, n_scales)
    if config.objective == "mem":
        return MEM(mixer)
    return CMEM(mixer, config.projector_hidden, config.projector_dim, config.tau, config.contrastive_weight,
                config.contrastive_loss)


def mixer_loss_variant(objective: str, contrastive_loss: str) -> str:
    """The pretraining loss a mixer's records name: "MEM", or "CMEM" with its contrastive loss."""
    return "MEM" if objective == "mem" else f"CMEM ({contrastive_loss})"


def param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Two AdamW groups: decayed weights, and the rest (1-d parameters, position tables, learned tokens)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if weight_decay_exempt(name, param) else decay).append(param)
    return [{"params": decay, "wd_multiplier": 1.0}, {"params": no_decay, "wd_multiplier": 0.0}]


def _inputs(model: MEM | CMEM, views: list[Any], masks: list[torch.Tensor], device: torch.device) -> tuple[Any, Any]:
    views = [v.to(device) for v in views]
    masks = [m.to(device, non_blocking=True) for m in masks]
    return (views[0], masks[0]) if isinstance(model, MEM) else (tuple(views), tuple(masks))


def _losses(model: MEM | CMEM, inputs: tuple[Any, Any]) -> tuple[torch.Tensor, dict[str, float]]:
    result = model(*inputs)
    terms = {"loss": result.loss}
    if isinstance(model, CMEM):
        terms.update(mem=result.mem, contrastive=result.contrastive)
    values = {k: float(v.detach()) for k, v in terms.items()}
    values.update({f"scale_{s}": float(v) for s, v in enumerate(result.per_scale.detach().cpu())})
    return result.loss, values


def train_mixer(config: MixerTrainConfig, region_files: Sequence[str | os.PathLike[str]],
                out_dir: str | os.PathLike[str], *, stop_at: int | None = None, progress: bool = True,
                device: str | torch.device | None = None, provenance_config: dict[str, Any] | None = None,
                on_step: Callable[[int, dict[str, float]], None] | None = None) -> MixerTrainResult:
    """Pretrain (or resume) the mixing encoder on ``region_files``; see the module docstring for outputs.

    ``stop_at`` ends this call at that iteration (after checkpointing); a later call resumes.
    ``on_step(iteration, losses)`` is called after each optimizer step (e.g. to time iterations).
    """
    # handlers first: the data loader's workers, forked later, inherit them instead of dying of the signal
    with preemption.stop_signals() as stop_request:
        return _train_mixer(config, region_files, Path(out_dir), stop_at, progress, device, provenance_config,
                            on_step, stop_request)


def _train_mixer(config: MixerTrainConfig, region_files: Sequence[str | os.PathLike[str]], out_dir: Path,
                 stop_at: int | None, progress: bool, device: str | torch.device | None,
                 provenance_config: dict[str, Any] | None, on_step: Callable[[int, dict[str, float]], None] | None,
                 stop_request: preemption.StopRequest) -> MixerTrainResult:
    make_output_dir(out_dir)
    device = pick_device(device)
    precision = resolve_precision(config.precision, device)
    source = RegionSource(region_files)
    if config.objective == "cmem" and config.context < source.t:
        raise ConfigError(f"aggregate.pretrain.context = {config.context}: must be >= the regions' t = {source.t}")
    identity = {"config": {k: v for k, v in dataclasses.asdict(config).items() if k not in OPERATIONAL},
                "data": source.identity()}

    torch.manual_seed(config.seed)
    model = build_objective(config, source.feature_dim, source.n_scales).to(device)
    optimizer = torch.optim.AdamW(param_groups(model), lr=config.lr, betas=config.betas)
    schedule = CosineSchedule(config.lr, config.min_lr, config.iterations,
                              min(config.warmup_iters, config.iterations))

    start, history, checkpoint_path = 0, [], out_dir / CHECKPOINT
    if (state := resume_state(checkpoint_path, identity)) is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = int(state["iteration"]), list(state["history"])
        log.info("resuming from %s at iteration %d", checkpoint_path, start)
    stop = stop_iteration(start, config.iterations, stop_at)
    log.info("%s on %s (%s): %d regions from %d slides, batch %d, peak lr %.3g; iterations %d to %d",
             config.objective, device, precision, len(source), len(source.slides), config.batch_size, config.lr,
             start, stop)

    mixed_precision = autocast(precision, device)
    draws = IterationDraws(source, config.iterations, batch_size=config.batch_size, seed=config.seed,
                           mask_ratio=config.mask_ratio, dihedral=config.dihedral,
                           context=config.context if config.objective == "cmem" else None)
    loader = DataLoader(draws, batch_size=None, sampler=range(start, stop), num_workers=config.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    bar = tqdm(total=stop - start, desc=f"mixer [{config.objective}]", unit="it", disable=not progress)
    model.train()
    try:
        began = time.perf_counter()
        for iteration, (views, masks) in zip(range(start, stop), loader):
            seeds.seed_globals(config.seed, 0, iteration)
            lr = schedule[iteration]
            for group in optimizer.param_groups:
                group["lr"], group["weight_decay"] = lr, config.weight_decay * group["wd_multiplier"]
            with mixed_precision:
                loss, values = _losses(model, _inputs(model, views, masks, device))
            check_finite(values, iteration, checkpoint_path, {"lr": lr}, "lower base_lr or lengthen warmup_iters")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
            optimizer.step()
            done = iteration + 1
            now = time.perf_counter()
            history.append({"iteration": done, "lr": lr, **values, "samples_per_s": config.batch_size / (now - began)})
            began = now
            if on_step is not None:
                on_step(iteration, values)
            if done % config.log_every == 0 or done == stop:
                log.info("iteration %d/%d: %s", done, config.iterations,
                         ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
            signum = stop_request.signum if done < stop else None  # stop on a signal
            if done % config.checkpoint_every == 0 or done == stop or signum is not None:
                save_checkpoint(checkpoint_path, {"iteration": done, "identity": identity, "model": model.state_dict(),
                                                  "optimizer": optimizer.state_dict(), "history": history})
                write_history(out_dir / HISTORY, history)
            bar.update()
            bar.set_postfix(loss=f"{values['loss']:.4f}")
            if signum is not None:
                raise preemption.preempted(f"mixer pretraining ({config.objective})", signum,
                                           f"after iteration {done} of {config.iterations}", checkpoint_path)
    finally:
        bar.close()

    weights = card = None
    if stop == config.iterations:
        card_values = _model_card(config, model, source, precision, provenance_config)
        weights, card = export_mixer(model.encoder, out_dir, card_values)
        log.info("exported the mixing encoder to %s", weights)
    return MixerTrainResult(stop, model, history, weights, card)


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    columns = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)


def _model_card(config: MixerTrainConfig, model: MEM | CMEM, source: RegionSource, precision: str,
                provenance_config: dict[str, Any] | None) -> dict[str, Any]:
    first = source.slides[0]
    return {
        "model": f"mixed-magnification mixing encoder pretrained with {config.objective.upper()} (magflow)",
        "mixer": model.config.to_dict(),
        "objective": config.objective,
        "pretraining_loss": mixer_loss_variant(config.objective, config.contrastive_loss),
        "regions": {"t": source.t, "target_mpps": first.target_mpps, "factors": list(source.factors),
                    "tokens": len(first.layout), "position": "top-left in finest-scale cells",
                    "files": [str(p) for p in source.paths], "count": len(source)},
        "tile_encoder": {"name": str(first.attrs["model"]), "card": json.loads(first.attrs.get("model_card", "{}"))},
        "training": {**dataclasses.asdict(config), "peak_lr": config.lr,
                     "lr_rule": f"linear: base_lr {config.base_lr:g} at batch {config.reference_batch}"},
        "provenance": provenance.collect(config=provenance_config or dataclasses.asdict(config),
                                         seeds={"train": config.seed}, precision=precision),
    }


def export_mixer(encoder: MixingEncoder, out_dir: str | os.PathLike[str], card: dict[str, Any]) -> tuple[Path, Path]:
    """Write the encoder's state dict (float32 safetensors) and the model card, each atomically."""
    out_dir = Path(out_dir)
    weights, card_path = out_dir / WEIGHTS, out_dir / CARD
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in encoder.state_dict().items()}
    save_weights(tensors, weights, {"format": "pt", "model": "magflow MixingEncoder"})
    card = {**card, "weights": {"file": WEIGHTS, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                                "dtype": "float32", "keys": "magflow.aggregate.mixer.MixingEncoder state dict"}}
    with atomic_path(card_path) as tmp:
        tmp.write_text(json.dumps(card, indent=1, default=str) + "\n")
    return weights, card_path


def load_mixer(out_dir: str | os.PathLike[str]) -> MixingEncoder:
    """The exported mixing encoder of a pretraining run (eval mode, frozen)."""
    out_dir = Path(out_dir)
    if not (out_dir / CARD).is_file() or not (out_dir / WEIGHTS).is_file():
        raise ConfigError(f"mixer directory {out_dir}: needs {WEIGHTS} and {CARD} (written when mixer pretraining "
                          "finishes); pretrain it first or fix the path")
    mixer = MixerConfig(**json.loads((out_dir / CARD).read_text())["mixer"])
    encoder = MixingEncoder(mixer)
    encoder.load_state_dict(load_file(out_dir / WEIGHTS))
    return encoder.eval().requires_grad_(False)
