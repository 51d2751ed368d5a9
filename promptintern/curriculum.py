"""How a run's optimizer steps are spent: steps per stage, the learning-rate schedule, batches.

A schedule (``promptintern.schedule``) says *what* each stage trains on; this module says *how
long* and *at which learning rate*. Pure Python, no torch, so the flow can plan a run (and the
direct baseline at equal steps) before any model is loaded.

    from promptintern.curriculum import plan_stages
    plans = plan_stages(cfg.schedule.num_stages, cfg.train, rows=64)
    [p.steps for p in plans]          # [16, 16, 16] for cpu-repro; [12, 12, 24] with weights 1,1,2

The knobs (all in ``TrainSettings``):

* ``total_epochs`` / ``epochs_per_stage``: the budget. With ``stage_weights`` the run's budget
  (``total_epochs`` passes over the rows, as optimizer steps) is split across the stages by weight
  (``[1, 1, 2]``: the final, query-only form gets half), else every stage gets its own epochs.
* ``reset_optimizer_each_stage``: True, every stage starts a fresh AdamW and its own warm-up and
  decay (what the project did before these settings existed); False, one AdamW state and one
  learning-rate schedule run across all stages, as one training run whose data changes form.
* ``lr_schedule``: ``linear`` (warm-up, then linear decay to the end), ``wsd`` (warm-up, stable,
  then a linear decay over the last ``decay_ratio`` of the steps: with one schedule across stages
  the annealing happens on the inference form), ``constant`` (warm-up, then flat).

No update runs at learning rate 0: warm-up step s (0-based) runs at (s + 1) / w of the peak, and
the last decay step at 1 / (decay length) of it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field


class StagePlan(BaseModel):
    """One stage's share of the run: how many optimizer steps, and where they sit in the LR schedule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: int = Field(ge=1, description="1-based stage index")
    steps: int = Field(ge=1, description="optimizer steps this stage runs")
    step_offset: int = Field(0, ge=0, description="steps of the learning-rate schedule already taken "
                                                  "before this stage (0 when each stage has its own)")
    schedule_steps: int = Field(ge=1, description="length of the learning-rate schedule this stage follows: "
                                                 "its own steps, or the whole run's")
    carry_optimizer: bool = Field(False, description="start from the previous stage's AdamW state")
    keep_optimizer: bool = Field(False, description="save this stage's AdamW state for the next stage")


def plan_batches(lengths: Sequence[int], batch_size: int, epochs: float, seed: int) -> list[list[int]]:
    """Row indices per micro-batch, for all epochs: length-grouped within shuffled chunks.

    Deterministic in ``seed``; a fractional epoch count takes the first part of the last epoch.
    """
    rng = random.Random(seed)
    n = len(lengths)
    batches: list[list[int]] = []
    for epoch in range(math.ceil(epochs)):
        order = list(range(n))
        rng.shuffle(order)
        chunk = batch_size * 16
        epoch_batches = []
        for start in range(0, n, chunk):
            part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
            epoch_batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
        rng.shuffle(epoch_batches)
        if epoch + 1 > epochs:  # the fractional tail
            epoch_batches = epoch_batches[: max(1, round((epochs - epoch) * len(epoch_batches)))]
        batches += epoch_batches
    return batches


def batches_for_steps(lengths: Sequence[int], batch_size: int, grad_accum: int, steps: int,
                      seed: int) -> list[list[int]]:
    """Exactly ``steps * grad_accum`` micro-batches: whole shuffled epochs, the last one cut.

    For a step count that ``epochs`` passes give, this is ``plan_batches(..., epochs, seed)``."""
    per_epoch = len(plan_batches(lengths, batch_size, 1, seed))
    wanted = steps * grad_accum
    return plan_batches(lengths, batch_size, math.ceil(wanted / per_epoch), seed)[:wanted]


def steps_for_epochs(rows: int, batch_size: int, grad_accum: int, epochs: float) -> int:
    """Optimizer steps that ``epochs`` passes over ``rows`` rows take (as ``train_stage`` counts them)."""
    return math.ceil(len(plan_batches([0] * rows, batch_size, epochs, 0)) / grad_accum)


def plan_stages(num_stages: int, train, rows: int) -> list[StagePlan]:
    """Every stage's plan for a run of ``num_stages`` stages over ``rows`` training rows.

    ``train`` is a ``promptintern.config.TrainSettings``. With ``stage_weights`` the budget of
    ``epochs_per_stage * num_stages`` passes is counted in steps once and split by weight (every
    stage gets at least one step; rounding goes to the last stage), else each stage takes its own
    ``epochs_per_stage``."""
    if rows < 1:
        raise ValueError("plan_stages: the run has no training rows")
    if train.stage_weights is None:
        steps = [steps_for_epochs(rows, train.batch_size, train.grad_accum, train.epochs_per_stage)] * num_stages
    else:
        weights = list(train.stage_weights)
        if len(weights) != num_stages:
            raise ValueError(f"train.stage_weights has {len(weights)} weights for {num_stages} stages "
                             f"(schedule.num_stages): give one weight per stage")
        total = steps_for_epochs(rows, train.batch_size, train.grad_accum, train.epochs_per_stage * num_stages)
        if total < num_stages:
            raise ValueError(f"the budget is {total} optimizer steps for {num_stages} stages: raise "
                             f"train.total_epochs (or train.epochs_per_stage), or lower train.batch_size")
        steps = [max(1, math.floor(total * w / sum(weights))) for w in weights[:-1]]
        steps.append(total - sum(steps))
        if steps[-1] < 1:
            raise ValueError(f"train.stage_weights={tuple(weights)} leave no step for the last stage of a "
                             f"{total}-step budget: give it a larger weight")
    one_schedule = not train.reset_optimizer_each_stage
    plans, offset = [], 0
    for t, n in enumerate(steps, start=1):
        plans.append(StagePlan(stage=t, steps=n, step_offset=offset if one_schedule else 0,
                               schedule_steps=sum(steps) if one_schedule else n,
                               carry_optimizer=one_schedule and t > 1,
                               keep_optimizer=one_schedule and t < num_stages))
        offset += n
    return plans


def adaptive_plan(nominal: Sequence[StagePlan], stage: int, used: int, min_steps: int) -> StagePlan:
    """Stage ``stage``'s plan under adaptive stage lengths, given the ``used`` steps the stages before
    it took: the run's budget (the sum of the ``nominal`` plans) is kept; a stage before the last may
    take all that is left except ``min_steps`` for each later stage (it ends earlier when its probe
    stops improving), the last stage takes the rest."""
    budget, count = sum(p.steps for p in nominal), len(nominal)
    steps = budget - used - (min_steps * (count - stage) if stage < count else 0)
    if steps < 1:
        raise ValueError(f"stage {stage}: {budget - used} of the {budget}-step budget are left, not enough for "
                         f"{count - stage + 1} stages of at least train.adaptive.min_steps={min_steps}: lower it, "
                         f"or raise the budget (train.total_epochs)")
    one_schedule = nominal[0].keep_optimizer or nominal[-1].carry_optimizer
    return nominal[stage - 1].model_copy(update={
        "steps": steps, "step_offset": used if one_schedule else 0,
        "schedule_steps": budget if one_schedule else steps})


def should_advance(history: Sequence[float], patience: int, min_delta: float = 0.0) -> bool:
    """Whether a stage should end: its last ``patience`` probes (higher is better) all failed to beat
    the best probe before them by more than ``min_delta``."""
    if len(history) <= patience:
        return False
    best_before = max(history[:-patience])
    return all(value <= best_before + min_delta for value in history[-patience:])


@dataclass
class StageProbe:
    """What adaptive stage lengths measure during a stage: ``score(model)`` (higher is better) of the
    next stage's prompt form on held-out rows, every ``every`` steps once ``min_steps`` are done."""

    score: Callable[[Any], float]
    every: int
    patience: int
    min_delta: float = 0.0
    min_steps: int = 1


def single_stage_plan(steps: int) -> StagePlan:
    """One stage that is the whole run: the direct baselines."""
    return StagePlan(stage=1, steps=steps, schedule_steps=steps)


def warmup_steps(train, schedule_steps: int) -> int:
    return math.ceil(train.warmup_ratio * schedule_steps)


def lr_factor(step: int, total: int, warmup: int, kind: str = "linear", decay_ratio: float = 0.25) -> float:
    """Multiplier of the peak learning rate for optimizer update ``step`` (0-based) of a ``total``-step
    schedule with ``warmup`` warm-up steps. Never 0 inside the schedule (see the module docstring)."""
    if not 0 <= step < total:
        raise ValueError(f"step {step} is outside a schedule of {total} steps")
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    if kind == "linear":
        return (total - step) / (total - warmup)
    if kind == "wsd":
        decay = max(1, min(total - warmup, round(decay_ratio * total)))
        return min(1.0, (total - step) / decay)
    raise ValueError(f"train.lr_schedule={kind!r}: allowed: linear, wsd, constant")


def is_direct_no_template(cfg) -> bool:
    """Whether a ``RunConfig`` is itself plain fine-tuning on the query alone (one query-only stage,
    cross-entropy only)."""
    stages = cfg.schedule.stages()
    return len(stages) == 1 and stages[0].tau == 0.0 and stages[0].k == 0 and cfg.train.distill is None


def one_stage_recipe(train):
    """A training recipe as a one-stage run reads it: the settings only a multi-stage run reads are
    set to their defaults (the plan carries the steps), so runs that differ only there share one
    model (one cache entry)."""
    return train.model_copy(update={"stage_weights": None, "total_epochs": None, "epochs_per_stage": 1.0,
                                    "reset_optimizer_each_stage": True, "adaptive": None})


def direct_train_settings(train):
    """The run's recipe for its one-stage baselines (direct-no-template at equal steps, the
    full-prompt teacher): plain cross-entropy, so every curriculum with the same recipe and budget
    shares one baseline model."""
    return one_stage_recipe(train).model_copy(update={"distill": None})
