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
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from magflow.aggregate.auroc import Auroc, slide_auroc
from magflow.aggregate.bags import SlideSet
from magflow.aggregate.settings import MILConfig
from magflow.aggregate.slide_model import SlideModel
from magflow.errors import ConfigError
from magflow.evaluate.classification import mean_std
from magflow.evaluate.splits import SlideSplit, seeded_splits

log = logging.getLogger(__name__)

_NO_DECAY_PREFIXES = ("encoder.cls_token", "encoder.pos.", "scale_embed.")  # tokens, position and scale tables


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
        no_decay = param.ndim <= 1 or name.startswith(_NO_DECAY_PREFIXES)
        key = (config.lr * multiplier, 0.0 if no_decay else config.weight_decay)
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


def train_mil(model: SlideModel, train: SlideSet, val: SlideSet | None, config: MILConfig,
              seed: int = 0) -> FitResult:
    """Train ``model`` in place (see the module docstring); return it with the kept epoch's weights."""
    if len(train) == 0:
        raise ConfigError("abmil: no training slides (check the split column or the split fractions)")
    optimizer = torch.optim.AdamW(mil_param_groups(model, config), lr=config.lr, weight_decay=config.weight_decay)
    order = torch.Generator().manual_seed(seed)
    groups = train.group_rows()
    use_val = config.select == "val_loss" and val is not None and len(val) > 0
    best_loss, best_state, best_epoch = math.inf, None, config.epochs
    history: list[dict[str, Any]] = []
    for epoch in tqdm(range(1, config.epochs + 1), desc="abmil epochs", leave=False, disable=None):
        frozen = epoch <= config.freeze_epochs
        model.set_encoder_trainable(not frozen)
        model.train()
        losses = []
        perm = torch.randperm(len(groups), generator=order).tolist()
        for start in range(0, len(perm), config.groups_per_batch):
            loss = _batch_loss(model, train, [groups[g] for g in perm[start:start + config.groups_per_batch]],
                               config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
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
        return seeded_splits(slides.labels, slides.ids, slides.groups, config.seeds,
                             test_fraction=config.test_fraction, val_fraction=config.val_fraction)
    except ValueError as error:
        raise ConfigError(f"abmil splits: {error}") from error


def evaluate_seeds(slides: SlideSet, splits: Sequence[SlideSplit], build_model: Callable[[], SlideModel],
                   config: MILConfig, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Train and test one fresh model per split; AUROC per seed (NaN with a reason) and mean ± std.

    ``build_model`` is called after ``torch.manual_seed(split.seed)``, so the init is seeded. It must
    return a new model each call, its encoder loaded afresh: training fine-tunes the encoder in place.
    """
    per_seed = []
    for split in tqdm(splits, desc="abmil seeds", disable=None):
        torch.manual_seed(split.seed)
        model = build_model().to(device)
        train, val, test = (slides.subset(part) for part in (split.train, split.val, split.test))
        fit = train_mil(model, train, val, config, seed=split.seed)
        auroc = (slide_auroc(test.labels, predict_proba(fit.model, test)) if len(test)
                 else Auroc(float("nan"), f"no held-out slides in the test split of seed {split.seed}"))
        per_seed.append({"seed": split.seed, "auroc": auroc.value, "reason": auroc.reason, "n_train": len(train),
                         "n_val": len(val), "n_test": len(test), "best_epoch": fit.best_epoch,
                         "history": fit.history})
        log.info("abmil seed %d: AUROC %.4f %s", split.seed, auroc.value, auroc.reason)
    summary = mean_std([s["auroc"] for s in per_seed])
    return {"auroc": {"mean": summary.mean, "std": summary.std, "n": summary.n}, "per_seed": per_seed}
