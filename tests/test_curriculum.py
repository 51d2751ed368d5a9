"""The step plan and the learning-rate schedules of ``promptintern.curriculum``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from promptintern.config import TrainSettings, preset
from promptintern.curriculum import (
    batches_for_steps,
    direct_train_settings,
    is_direct_no_template,
    lr_factor,
    plan_batches,
    plan_stages,
    steps_for_epochs,
)
from promptintern.variants import variant_config


def test_steps_for_epochs_counts_what_plan_batches_makes():
    for rows, bs, accum, epochs in [(64, 4, 1, 1.0), (64, 4, 1, 3.0), (10, 4, 1, 1.0), (64, 4, 3, 1.0),
                                    (64, 4, 1, 0.5), (33, 8, 2, 2.5)]:
        micro = len(plan_batches([0] * rows, bs, epochs, 7))
        assert steps_for_epochs(rows, bs, accum, epochs) == -(-micro // accum)


def test_batches_for_steps_is_plan_batches_cut_to_the_steps():
    lengths = [5, 40, 7, 33, 12, 9, 50, 2, 21, 18]
    assert batches_for_steps(lengths, 2, 1, 10, seed=3) == plan_batches(lengths, 2, 2, seed=3)
    assert batches_for_steps(lengths, 2, 1, 7, seed=3) == plan_batches(lengths, 2, 2, seed=3)[:7]
    assert len(batches_for_steps(lengths, 2, 2, 6, seed=3)) == 12  # steps x grad_accum micro-batches


def test_each_stage_gets_its_epochs_and_its_own_schedule_by_default():
    plans = plan_stages(3, TrainSettings(batch_size=4, epochs_per_stage=1.0), rows=64)
    assert [p.steps for p in plans] == [16, 16, 16]
    assert [(p.step_offset, p.schedule_steps) for p in plans] == [(0, 16)] * 3
    assert not any(p.carry_optimizer or p.keep_optimizer for p in plans)


def test_stage_weights_split_the_same_budget():
    even = plan_stages(3, TrainSettings(batch_size=4, epochs_per_stage=1.0), rows=64)
    heavy = plan_stages(3, TrainSettings(batch_size=4, epochs_per_stage=1.0, stage_weights=(1, 1, 2)), rows=64)
    assert [p.steps for p in heavy] == [12, 12, 24]
    assert sum(p.steps for p in heavy) == sum(p.steps for p in even)  # equal compute
    odd = plan_stages(3, TrainSettings(batch_size=4, epochs_per_stage=1.0, stage_weights=(1, 1, 1)), rows=60)
    assert [p.steps for p in odd] == [15, 15, 15]


def test_one_optimizer_runs_one_schedule_across_stages():
    plans = plan_stages(3, TrainSettings(batch_size=4, reset_optimizer_each_stage=False,
                                         stage_weights=(1, 1, 2)), rows=64)
    assert [(p.step_offset, p.schedule_steps) for p in plans] == [(0, 48), (12, 48), (24, 48)]
    assert [p.carry_optimizer for p in plans] == [False, True, True]
    assert [p.keep_optimizer for p in plans] == [True, True, False]


def test_no_update_runs_at_learning_rate_zero():
    for kind in ("linear", "wsd", "constant"):
        factors = [lr_factor(s, 48, 3, kind) for s in range(48)]
        assert min(factors) > 0, kind
        assert factors[:3] == [1 / 3, 2 / 3, 1.0]  # warm-up reaches the peak on its last step
    assert lr_factor(0, 16, 1) == 1.0  # a one-step warm-up is the peak, not 0 (the old schedule's first step)


def test_wsd_is_stable_then_decays_over_its_last_share():
    factors = [lr_factor(s, 48, 3, "wsd", decay_ratio=0.25) for s in range(48)]
    assert all(f == 1.0 for f in factors[2:36])
    assert factors[36:] == [(48 - s) / 12 for s in range(36, 48)]
    linear = [lr_factor(s, 48, 3, "linear") for s in range(48)]
    assert all(a > b for a, b in zip(linear[3:], linear[4:]))  # decays from the end of warm-up on
    with pytest.raises(ValueError, match="outside"):
        lr_factor(48, 48, 3)


def test_stage_weights_are_checked_against_the_stages_by_key():
    with pytest.raises(ValidationError, match="train.stage_weights"):
        preset("tiny", {"train": {"stage_weights": [1, 2]}})
    with pytest.raises(ValidationError, match="positive weight"):
        preset("tiny", {"train": {"stage_weights": [1, 0, 2]}})
    assert preset("tiny", {"train": {"stage_weights": [1, 1, 2]}}).train.stage_weights == (1, 1, 2)


def test_the_direct_baseline_shares_one_recipe_across_curricula():
    a = variant_config("promptintern-final-heavy", "cpu-repro")
    b = variant_config("promptintern", "cpu-repro")
    assert direct_train_settings(a.train) == direct_train_settings(b.train)
    assert direct_train_settings(a.train).lr == a.train.lr
    assert is_direct_no_template(variant_config("direct-no-template", "cpu-repro"))
    assert not is_direct_no_template(variant_config("null-curriculum", "cpu-repro"))
    assert not is_direct_no_template(variant_config("direct-template-only", "cpu-repro"))
