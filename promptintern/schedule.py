"""The progressive schedule: which template rate tau_t and how many shots k_t each stage trains with.

PromptIntern trains in stages t = 1..T. Both quantities fall from their start value to their end
value along one *shape* g(p), where p = (t - 1) / (T - 1) is the stage's progress in [0, 1]:

* ``linear``               g(p) = p                                      (the paper's default)
* ``exponential``          g(p) = (1 - e^(-a p)) / (1 - e^(-a))          (fast early, slow late)
* ``inverse-exponential``  g(p) = (e^(a p) - 1) / (e^a - 1)              (slow early, fast late)

with a = ``steepness``. Then

    tau_t = tau_floor + (tau0 - tau_floor) * (1 - g(p))
    k_t   = floor(k0 * (1 - g(p)))

so the paper's default ``Schedule(pattern="linear", stages=3, k0=10)`` gives (1.0, 10), (0.5, 5),
(0.0, 0) and MBPP's ``k0=5`` gives k = 5, 2, 0. Inference uses the last stage's prompt form.
A single stage is direct fine-tuning with one fixed prompt form: ``Schedule(num_stages=1,
tau0=0.6, k0=5)`` trains and infers with the template at 0.6 and 5 shots.

``replay=0.25`` trains a quarter of every earlier stage's rows (drawn afresh per stage) in the final,
inference form: the model meets the form it will answer in from the first step (mixed forms).

``absorb_template=False`` keeps the full template at every stage (the "without template
compression" ablation); ``absorb_examples=False`` trains without shots (the "without example
absorption" ablation).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Pattern = Literal["linear", "exponential", "inverse-exponential"]
PATTERNS: tuple[str, ...] = ("linear", "exponential", "inverse-exponential")


class StageSpec(BaseModel):
    """One training stage: its 1-based index, template rate and shot count."""

    model_config = ConfigDict(frozen=True)

    stage: int
    tau: float = Field(ge=0.0, le=1.0, description="kept fraction of template tokens (1 = all)")
    k: int = Field(ge=0, description="retrieved few-shot examples per row")

    @property
    def name(self) -> str:
        return f"stage{self.stage}-tau{self.tau:.2f}-k{self.k}"


class Schedule(BaseModel):
    """A typed schedule; ``stages()`` computes every stage's (tau, k)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pattern: Pattern = Field("linear", description=f"decay shape, one of {PATTERNS}")
    num_stages: int = Field(3, ge=1, description="number of training stages T")
    k0: int = Field(10, ge=0, description="shots at stage 1 (paper: 10; MBPP 5)")
    tau0: float = Field(1.0, ge=0.0, le=1.0, description="template rate at stage 1 (1 = verbatim)")
    tau_floor: float = Field(0.0, ge=0.0, le=1.0, description="template rate at the last stage")
    steepness: float = Field(3.0, gt=0.0, description="a in the exponential shapes")
    absorb_template: bool = Field(True, description="compress the template stage by stage")
    absorb_examples: bool = Field(True, description="train with retrieved shots")
    replay: float = Field(0.0, ge=0.0, lt=1.0,
                          description="mixed forms: this share of every earlier stage's rows is trained in the "
                                      "final (inference) prompt form instead of the stage's (same rows, same steps)")

    @model_validator(mode="after")
    def _floor_below_start(self) -> "Schedule":
        if self.tau_floor > self.tau0:
            raise ValueError(f"schedule.tau_floor={self.tau_floor} is above schedule.tau0={self.tau0}: "
                             "the template rate can only fall")
        return self

    def shape(self, p: float) -> float:
        a = self.steepness
        if self.pattern == "linear":
            return p
        if self.pattern == "exponential":
            return (1.0 - math.exp(-a * p)) / (1.0 - math.exp(-a))
        return (math.exp(a * p) - 1.0) / (math.exp(a) - 1.0)

    def stages(self) -> list[StageSpec]:
        out = []
        for t in range(1, self.num_stages + 1):
            p = 0.0 if self.num_stages == 1 else (t - 1) / (self.num_stages - 1)
            remaining = 1.0 - self.shape(p)
            tau = self.tau_floor + (self.tau0 - self.tau_floor) * remaining if self.absorb_template else self.tau0
            k = math.floor(self.k0 * remaining + 1e-9) if self.absorb_examples else 0
            out.append(StageSpec(stage=t, tau=round(tau, 6), k=k))
        return out

    def inference_stage(self) -> StageSpec:
        """The prompt form the trained model expects at inference: the last stage's."""
        return self.stages()[-1]

    def distinct_taus(self) -> list[float]:
        """The template rates the compressor must produce (1 and 0 need no compressor)."""
        return sorted({s.tau for s in self.stages()}, reverse=True)


def linear(num_stages: int = 3, k0: int = 10, tau_floor: float = 0.0) -> Schedule:
    return Schedule(pattern="linear", num_stages=num_stages, k0=k0, tau_floor=tau_floor)
