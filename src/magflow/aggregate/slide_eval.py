"""Slide-level evaluation: train AB-MIL on the train slides, report AUROC on held-out slides, per seed.

- Loss: cross-entropy with label smoothing per slide; a group's (patient's) loss is the minimum over
  its slides, since its label need only show in one of them (a single-slide group is the usual loss).
  A batch is ``groups_per_batch`` whole groups; its loss is the mean over its groups.
- Optimizer: AdamW, constant lr (default 1e-5) and weight decay 0.05, none on biases, norms, the
  class tokens and the position and scale tables. Encoder parameters get layer-wise lr decay
  lr·decay^(depth+1−layer) (``MixingEncoder.layer_id``: 0 embeddings, 1..depth blocks, depth+1 the
  final norm); AB-MIL parameters get lr.
- The encoder is frozen (run without gradients, so AdamW leaves it alone) for the first
  ``freeze_epochs`` epochs, then fine-tuned.
- Model selection: with ``select="val_loss"`` the weights of the epoch with the lowest validation
  loss (the same group-min loss on the validation slides) are kept; with ``"last"``, or when there
  are no validation slides, the last epoch's.
- Per seed, the seed sets the model init, the order of groups and (unless the slide sheet fixes
  them) the train/val/test split; AUROC is then summarised as mean ± sample std over seeds.
- Pre-emption: given a checkpoint path, :func:`evaluate_seeds` writes it after each seed, and on
  SIGTERM or SIGUSR1 (:mod:`magflow.preemption`) after the current batch, then exits; a rerun resumes
  from it and gives the same record as an uninterrupted run (the model, optimizer, group order,
  random state and history of the seed in progress are all in it).

AUROC: slide-level AUROC that is NaN with a reason, never a crash, when a test set cannot define it.

Binary tasks score the probability of class 1 (scikit-learn's ``roc_auc_score``). Multi-class tasks
use one-vs-rest macro AUROC over the classes present in the test set: when every class is present
this is exactly scikit-learn's ``multi_class="ovr", average="macro"``; when some are absent, they
are left out of the average and the reason says which.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score
from torch import Tensor
from tqdm import tqdm

from magflow import preemption
from magflow.aggregate.abmil_model import SlideModel
from magflow.aggregate.bags import SlideSet
from magflow.aggregate.settings import MILConfig
from magflow.errors import ConfigError
from magflow.evaluate.probes import mean_std
from magflow.evaluate.splits import SlideSplit, seeded_splits
from magflow.training import resume_state, save_checkpoint, weight_decay_exempt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Auroc:
    value: float       # NaN when undefined
    reason: str = ""   # why it is undefined, or what was left out of the average; empty when neither


def slide_auroc(labels: ArrayLike, probs: ArrayLike) -> Auroc:
    """AUROC of class probabilities ``probs`` (n×C, rows sum to 1) against integer ``labels`` (n)."""
    y, p = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0] or p.shape[1] < 2:
        raise ValueError(f"probs must be n×C with C ≥ 2 and one row per label; got {p.shape} for {y.shape[0]} labels")
    present = np.unique(y)
    if len(present) < 2:
        return Auroc(float("nan"), f"AUROC is undefined: the {len(y)} held-out slide(s) all have class "
                                   f"{present.tolist()} (add slides of other classes to the test split)")
    n_classes = p.shape[1]
    if n_classes == 2:
        return Auroc(float(roc_auc_score(y, p[:, 1])))
    if len(present) == n_classes:
        return Auroc(float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=np.arange(n_classes))))
    absent = sorted(set(range(n_classes)) - set(present.tolist()))
    value = float(np.mean([roc_auc_score(y == c, p[:, c]) for c in present]))
    return Auroc(value, f"class(es) {absent} absent from the held-out slides: macro AUROC over {present.tolist()}")


@dataclass
class FitResult:
    model: SlideModel
    best_epoch: int                                   # 1-based epoch whose weights were kept
    history: list[dict[str, Any]] = field(default_factory=list)  # per epoch: train/val loss, frozen


def mil_param_groups(model: SlideModel, config: MILConfig) -> list[dict[str, Any]]:
    """AdamW groups with ``lr`` set: layer-wise decayed for encoder parameters, ``config.lr`` for the rest."""
    depth = len(model.encoder.blocks) if model.encoder is not None else 0
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        multiplier = 1.0
        if name.startswith("encoder."):
            multiplier = config.layer_decay ** (depth + 1 - model.encoder.layer_id(name.removeprefix("encoder.")))
        key = (config.lr * multiplier, 0.0 if weight_decay_exempt(name, param) else config.weight_decay)
        group = groups.setdefault(key, {"params": [], "param_names": [], "lr": key[0], "weight_decay": key[1]})
        group["params"].append(param)
        group["param_names"].append(name)
    return list(groups.values())


def group_min_loss(slide_losses: Tensor, group_index: Tensor) -> Tensor:
    """Per group, the minimum of its slides' losses (gradient flows to that slide only), groups in index order."""
    return torch.stack([slide_losses[group_index == g].min() for g in torch.unique(group_index)])


def _batch_loss(model: SlideModel, slides: SlideSet, groups: Sequence[Sequence[int]], smoothing: float) -> Tensor:
    rows = [r for g in groups for r in g]
    index = torch.tensor([k for k, g in enumerate(groups) for _ in g])
    logits = model([slides.bags[r] for r in rows], [slides.ids[r] for r in rows]).logits
    target = torch.as_tensor(slides.labels[rows], device=logits.device)
    losses = F.cross_entropy(logits, target, label_smoothing=smoothing, reduction="none")
    return group_min_loss(losses, index.to(logits.device)).mean()


@torch.no_grad()
def mil_loss(model: SlideModel, slides: SlideSet, config: MILConfig) -> float:
    """The training objective on ``slides`` (mean over groups of the group-min loss), in eval mode."""
    model.eval()
    groups = slides.group_rows()
    return float(np.mean([_batch_loss(model, slides, [g], config.label_smoothing).item() for g in groups]))


def _random_state(device: torch.device) -> dict[str, Tensor]:
    """The global generators that dropout draws from."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_random_state(state: Mapping[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def train_mil(model: SlideModel, train: SlideSet, val: SlideSet | None, config: MILConfig, seed: int = 0, *,
              stop: preemption.StopRequest | None = None, save: Callable[[dict[str, Any]], Path] | None = None,
              resume: Mapping[str, Any] | None = None) -> FitResult:
    """Train ``model`` in place (see the module docstring); return it with the kept epoch's weights.

    When ``stop`` is set after a batch, ``save`` gets the training state and returns the checkpoint it
    wrote, and :class:`~magflow.preemption.Preempted` is raised; ``resume`` (that state) continues it.
    """
    if len(train) == 0:
        raise ConfigError("abmil: no training slides (check the split column or the split fractions)")
    optimizer = torch.optim.AdamW(mil_param_groups(model, config), lr=config.lr, weight_decay=config.weight_decay)
    order = torch.Generator().manual_seed(seed)
    groups = train.group_rows()
    use_val = config.select == "val_loss" and val is not None and len(val) > 0
    best_loss, best_state, best_epoch = math.inf, None, config.epochs
    history: list[dict[str, Any]] = []
    device = next(model.parameters()).device
    first_epoch, first_batch, perm, losses = 1, 0, None, []  # perm: the current epoch's group order, once drawn
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        order.set_state(resume["order"])
        _set_random_state(resume["random"], device)
        first_epoch, first_batch, perm, losses = (resume["epoch"], resume["next_batch"], list(resume["perm"]),
                                                  list(resume["losses"]))
        best_loss, best_state, best_epoch = resume["best_loss"], resume["best_state"], resume["best_epoch"]
        history = list(resume["history"])
    for epoch in tqdm(range(first_epoch, config.epochs + 1), desc="abmil epochs", leave=False, disable=None):
        frozen = epoch <= config.freeze_epochs
        model.set_encoder_trainable(not frozen)
        model.train()
        if perm is None:
            perm, losses = torch.randperm(len(groups), generator=order).tolist(), []
        for start in range(first_batch, len(perm), config.groups_per_batch):
            loss = _batch_loss(model, train, [groups[g] for g in perm[start:start + config.groups_per_batch]],
                               config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if stop is not None and stop.signum is not None and save is not None:
                path = save({"epoch": epoch, "next_batch": start + config.groups_per_batch, "perm": perm,
                             "losses": losses, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "order": order.get_state(), "random": _random_state(device), "history": history,
                             "best_loss": best_loss, "best_state": best_state, "best_epoch": best_epoch})
                batches = math.ceil(len(perm) / config.groups_per_batch)
                raise preemption.preempted("AB-MIL training", stop.signum,
                                           f"at seed {seed}, epoch {epoch} of {config.epochs}, after batch "
                                           f"{start // config.groups_per_batch + 1} of {batches}", path)
        perm, first_batch = None, 0
        val_loss = mil_loss(model, val, config) if use_val else None  # type: ignore[arg-type]
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                        "encoder_frozen": frozen and model.encoder is not None})
        log.info("abmil epoch %d: train loss %.4f, val loss %s", epoch, history[-1]["train_loss"], val_loss)
        if val_loss is not None and val_loss < best_loss:
            best_loss, best_state, best_epoch = val_loss, copy.deepcopy(model.state_dict()), epoch
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(model, best_epoch, history)


@torch.no_grad()
def predict_proba(model: SlideModel, slides: SlideSet) -> np.ndarray:
    """Class probabilities, one row per slide."""
    model.eval()
    return np.stack([torch.softmax(model([bag], [sid]).logits[0].float(), -1).cpu().numpy()
                     for sid, bag in zip(slides.ids, slides.bags)])


def mil_splits(slides: SlideSet, config: MILConfig, sheet_splits: Mapping[str, str] | None = None) -> list[SlideSplit]:
    """One split per seed: the slide sheet's ``split`` column for every seed if given, else seeded splits.

    Seeded splits are label-stratified and keep each group in one split (:mod:`magflow.evaluate.splits`).
    """
    if sheet_splits:
        parts = {name: frozenset(s for s in slides.ids if sheet_splits.get(s) == name)
                 for name in ("train", "val", "test")}
        return [SlideSplit(parts["train"], parts["val"], parts["test"], seed) for seed in config.seeds]
    try:
        return seeded_mil_splits(slides, config)
    except ValueError as error:
        raise ConfigError(f"abmil splits: {error}") from error


def seeded_mil_splits(slides: SlideSet, config: MILConfig) -> list[SlideSplit]:
    """The seeded splits of ``slides``, one per seed of ``config``; ValueError when the slides cannot be split."""
    return seeded_splits(slides.labels, slides.ids, slides.groups, config.seeds,
                         test_fraction=config.test_fraction, val_fraction=config.val_fraction)


def _identity(slides: SlideSet, splits: Sequence[SlideSplit], config: MILConfig) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the settings, the slides and their labels, the splits."""
    return {"config": dataclasses.asdict(config),
            "slides": {"ids": [str(i) for i in slides.ids], "labels": np.asarray(slides.labels).tolist()},
            "splits": {str(s.seed): {part: sorted(map(str, getattr(s, part))) for part in ("train", "val", "test")}
                       for s in splits}}


def evaluate_seeds(slides: SlideSet, splits: Sequence[SlideSplit], build_model: Callable[[], SlideModel],
                   config: MILConfig, device: torch.device | str = "cpu", *,
                   checkpoint: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Train and test one fresh model per split; AUROC per seed (NaN with a reason) and mean ± std.

    ``build_model`` is called after ``torch.manual_seed(split.seed)``, so the init is seeded. It must
    return a new model each call, its encoder loaded afresh: training fine-tunes the encoder in place.
    With ``checkpoint``, the run is saved there after each seed and on a stop signal, and resumed from
    it (see the module docstring); without it, a signal ends the process as usual.
    """
    per_seed: list[dict[str, Any]] = []
    resume = None
    identity = _identity(slides, splits, config)
    path = Path(checkpoint) if checkpoint is not None else None
    if (state := resume_state(path, identity)) is not None:
        per_seed, resume = list(state["per_seed"]), state["current"]
        log.info("resuming from %s: %d of %d seeds done%s", path, len(per_seed), len(splits),
                 f", seed {splits[len(per_seed)].seed} at epoch {resume['epoch']}" if resume else "")

    def save(current: dict[str, Any] | None) -> Path:
        assert path is not None
        save_checkpoint(path, {"identity": identity, "per_seed": per_seed, "current": current})
        return path

    with preemption.stop_signals() if path is not None else nullcontext(None) as stop:
        for split in tqdm(splits[len(per_seed):], desc="abmil seeds", disable=None):
            per_seed.append(_evaluate_seed(slides, split, build_model, config, device, stop,
                                           save if path is not None else None, resume))
            resume = None
            if path is not None:
                save(None)
    summary = mean_std([s["auroc"] for s in per_seed])
    return {"auroc": {"mean": summary.mean, "std": summary.std, "n": summary.n}, "per_seed": per_seed}


def _evaluate_seed(slides: SlideSet, split: SlideSplit, build_model: Callable[[], SlideModel], config: MILConfig,
                   device: torch.device | str, stop: preemption.StopRequest | None,
                   save: Callable[[dict[str, Any]], Path] | None, resume: Mapping[str, Any] | None) -> dict[str, Any]:
    torch.manual_seed(split.seed)
    model = build_model().to(device)
    train, val, test = (slides.subset(part) for part in (split.train, split.val, split.test))
    fit = train_mil(model, train, val, config, seed=split.seed, stop=stop, save=save, resume=resume)
    auroc = (slide_auroc(test.labels, predict_proba(fit.model, test)) if len(test)
             else Auroc(float("nan"), f"no held-out slides in the test split of seed {split.seed}"))
    log.info("abmil seed %d: AUROC %.4f %s", split.seed, auroc.value, auroc.reason)
    return {"seed": split.seed, "auroc": float(auroc.value), "reason": auroc.reason, "n_train": len(train),
            "n_val": len(val), "n_test": len(test), "best_epoch": fit.best_epoch, "history": fit.history}
