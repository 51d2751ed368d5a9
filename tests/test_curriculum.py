"""The step plan and the learning-rate schedules of ``promptintern.curriculum``."""

from __future__ import annotations

import pytest

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
    with pytest.raises(ValueError, match="train.stage_weights"):
        preset("tiny", {"train": {"stage_weights": [1, 2]}})
    with pytest.raises(ValueError, match="positive weight"):
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


def test_the_adaptive_rule_advances_once_the_probe_stops_improving():
    from promptintern.curriculum import should_advance

    rising, plateau = [10.0, 11.0, 12.5, 13.0], [10.0, 12.0, 11.5, 11.9]
    assert not any(should_advance(rising[:i], patience=2) for i in range(1, 5))
    assert [should_advance(plateau[:i], patience=2) for i in range(1, 5)] == [False, False, False, True]
    assert not should_advance([10.0, 12.0, 11.5, 12.5], patience=2)  # a new best resets the wait
    assert should_advance([10.0, 12.0, 12.05, 12.08], patience=2, min_delta=0.1)  # too small to count
    assert should_advance([10.0, 9.0], patience=1) and not should_advance([10.0], patience=1)


def test_adaptive_plans_keep_the_budget_and_leave_later_stages_their_minimum():
    from promptintern.curriculum import adaptive_plan

    nominal = plan_stages(3, TrainSettings(batch_size=4, reset_optimizer_each_stage=False), rows=64)  # 16 x 3
    first = adaptive_plan(nominal, 1, used=0, min_steps=4)
    assert (first.steps, first.step_offset, first.schedule_steps) == (40, 0, 48)  # 48 - 2 x 4
    second = adaptive_plan(nominal, 2, used=10, min_steps=4)  # stage 1 ended after 10 steps
    assert (second.steps, second.step_offset, second.carry_optimizer) == (34, 10, True)
    last = adaptive_plan(nominal, 3, used=30, min_steps=4)
    assert (last.steps, last.step_offset, last.schedule_steps) == (18, 30, 48)  # the rest of the budget
    reset = plan_stages(3, TrainSettings(batch_size=4), rows=64)
    assert adaptive_plan(reset, 2, used=10, min_steps=4).model_dump() | {} == {
        **reset[1].model_dump(), "steps": 34, "step_offset": 0, "schedule_steps": 34}
    with pytest.raises(ValueError, match="train.adaptive.min_steps"):
        adaptive_plan(nominal, 2, used=44, min_steps=4)


def test_adaptive_stage_lengths_need_a_held_out_split_that_is_not_scored():
    cfg = preset("tiny", {"train": {"adaptive": {"probe": "nll"}}})
    assert cfg.probe_split() == "dev" and preset("tiny").probe_split() is None
    with pytest.raises(ValueError, match="eval.test_subset is not set"):
        preset("tiny", {"train": {"adaptive": {"dev_split": "test"}}, "eval": {"test_subset": None}})
    with pytest.raises(ValueError, match="no held-out split"):
        preset("tiny", {"train": {"adaptive": {"dev_split": "train"}}})
