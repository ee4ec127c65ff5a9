"""Schedules at known iterations against their closed forms."""

import math

import pytest

from magflow.pretrain import CosineSchedule, build_schedules, teacher_temp_schedule


def test_cosine_schedule_at_start_warmup_end_midpoint_and_last():
    schedule = CosineSchedule(base=1.0, final=0.1, total_iters=110, warmup_iters=10, start_warmup_value=0.2)
    assert len(schedule) == 110
    assert schedule[0] == pytest.approx(0.2)
    assert schedule[5] == pytest.approx(0.2 + 0.8 * 5 / 9)  # linear, both ends included
    assert schedule[9] == pytest.approx(1.0)
    assert schedule[10] == pytest.approx(1.0)  # the cosine starts at base
    assert schedule[60] == pytest.approx(0.55)  # halfway through the 100 cosine steps
    assert schedule[109] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 99 / 100)))
    assert schedule[110] == schedule[10_000] == pytest.approx(0.1)


def test_cosine_schedule_without_warmup_is_monotone():
    schedule = CosineSchedule(base=0.04, final=0.2, total_iters=50)
    assert schedule[0] == pytest.approx(0.04)
    assert all(schedule[i] < schedule[i + 1] for i in range(49))


def test_teacher_temperature_warms_up_linearly_then_stays():
    schedule = teacher_temp_schedule(warmup_iters=31)
    assert schedule[0] == pytest.approx(0.04)
    assert schedule[15] == pytest.approx(0.055)
    assert schedule[30] == pytest.approx(0.07)
    assert schedule[31] == schedule[1000] == pytest.approx(0.07)


def test_dinov2_schedules_and_the_last_layer_freeze():
    schedules = build_schedules(epochs=4, iters_per_epoch=10, lr=1e-3, min_lr=1e-6, warmup_epochs=1,
                                warmup_teacher_temp_epochs=2)
    at = schedules.at
    assert at(0)["lr"] == pytest.approx(0.0) and at(9)["lr"] == pytest.approx(1e-3)
    assert at(25)["lr"] == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6))
    assert all(at(i)["last_layer_lr"] == 0.0 for i in range(10))
    assert all(at(i)["last_layer_lr"] == at(i)["lr"] for i in range(10, 45))
    assert at(0)["weight_decay"] == pytest.approx(0.04) and at(20)["weight_decay"] == pytest.approx(0.12)
    assert at(0)["momentum"] == pytest.approx(0.992) and at(40)["momentum"] == 1.0
    assert at(0)["teacher_temp"] == pytest.approx(0.04) and at(19)["teacher_temp"] == pytest.approx(0.07)


def test_warmup_longer_than_the_run_is_cut():
    schedules = build_schedules(epochs=2, iters_per_epoch=5, warmup_epochs=10)
    assert len(schedules.lr) == 10 and schedules.lr[9] == pytest.approx(1e-3)
