"""Per-iteration schedules: cosine with linear warmup (lr, weight decay, EMA momentum, teacher temperature)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np


class CosineSchedule:
    """Values precomputed for iterations 0..total_iters-1; ``final`` from then on.

    Warmup: ``start_warmup_value`` → ``base`` linearly over ``warmup_iters`` (both ends included).
    Then base → final along a half cosine: value(W + j) = final + (base − final)·(1 + cos(π j / (T − W)))/2
    for j in [0, T − W), so the last precomputed value is one step short of ``final``.
    """

    def __init__(self, base: float, final: float, total_iters: int, warmup_iters: int = 0,
                 start_warmup_value: float = 0.0) -> None:
        if not 0 <= warmup_iters <= total_iters:
            raise ValueError(f"warmup_iters ({warmup_iters}) must be in [0, total_iters={total_iters}]")
        self.final = final
        warmup = np.linspace(start_warmup_value, base, warmup_iters)
        steps = np.arange(total_iters - warmup_iters)
        cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * steps / max(len(steps), 1)))
        self.values = np.concatenate([warmup, cosine])

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, it: int) -> float:
        return float(self.values[it]) if it < len(self.values) else float(self.final)


def teacher_temp_schedule(warmup_iters: int, start: float = 0.04, end: float = 0.07) -> CosineSchedule:
    """Linear warmup ``start`` → ``end`` over ``warmup_iters``, then constant ``end``."""
    return CosineSchedule(end, end, total_iters=warmup_iters, warmup_iters=warmup_iters, start_warmup_value=start)


def last_layer_lr_schedule(lr: CosineSchedule, freeze_iters: int) -> CosineSchedule:
    """The lr schedule with the first ``freeze_iters`` values set to 0 (the head's last layer is frozen)."""
    frozen = copy.copy(lr)
    frozen.values = lr.values.copy()
    frozen.values[:freeze_iters] = 0.0
    return frozen


@dataclass
class Schedules:
    lr: CosineSchedule
    last_layer_lr: CosineSchedule
    weight_decay: CosineSchedule
    momentum: CosineSchedule
    teacher_temp: CosineSchedule

    def at(self, it: int) -> dict[str, float]:
        return {name: getattr(self, name)[it] for name in self.__dataclass_fields__}


def build_schedules(
    epochs: int,
    iters_per_epoch: int,
    *,
    lr: float = 1e-3,
    min_lr: float = 1e-6,
    warmup_epochs: int = 10,
    weight_decay: float = 0.04,
    weight_decay_end: float = 0.2,
    momentum: float = 0.992,
    momentum_end: float = 1.0,
    teacher_temp: float = 0.07,
    warmup_teacher_temp: float = 0.04,
    warmup_teacher_temp_epochs: int = 30,
    freeze_last_layer_epochs: int = 1,
) -> Schedules:
    """Every DINOv2 schedule, indexed by iteration; an lr warmup longer than the run is cut to its length."""
    total = epochs * iters_per_epoch
    lr_schedule = CosineSchedule(lr, min_lr, total, min(warmup_epochs * iters_per_epoch, total))
    return Schedules(
        lr=lr_schedule,
        last_layer_lr=last_layer_lr_schedule(lr_schedule, freeze_last_layer_epochs * iters_per_epoch),
        weight_decay=CosineSchedule(weight_decay, weight_decay_end, total),
        momentum=CosineSchedule(momentum, momentum_end, total),
        teacher_temp=teacher_temp_schedule(warmup_teacher_temp_epochs * iters_per_epoch,
                                           warmup_teacher_temp, teacher_temp),
    )
