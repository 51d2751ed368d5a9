"""Every baseline and ablation of the paper as a named, typed parameter set of the one DAG.

A variant is a small set of config overrides applied on top of a preset (``variant_config``); it
never adds a pipeline. The table below is the paper's (Tables 1-6), in our config's words:

=============================  ==================================================================
variant                        what it sets
=============================  ==================================================================
promptintern                   nothing: linear schedule, tau 1 -> 0, k k0 -> 0 (paper: 10-5-0)
promptintern-tau-floor-0.3     schedule.tau_floor = 0.3 (inference keeps the template at x0.3)
no-example-absorption          schedule.absorb_examples = false (never any shots)
no-template-compression        schedule.absorb_template = false (template verbatim at every stage)
schedule-exponential           schedule.pattern = exponential
schedule-inverse-exponential   schedule.pattern = inverse-exponential
bank-25 / bank-50 / bank-100   retrieval.bank_fraction = 0.25 / 0.5 / 1.0
direct-template-kshot          one stage: template verbatim + k0 shots (train and inference)
direct-template-0.6-halfk      one stage: template x0.6 + k0/2 shots
direct-template-only           one stage: template verbatim, no shots
direct-no-template             one stage: query only (plain fine-tuning)
llmlingua-0.3                  one stage: template compressed to 0.3 by LLMLingua, no shots
longllmlingua-0.3              one stage: the same with LongLLMLingua
llmlingua2-0.3                 one stage: the same with LLMLingua-2; needs compression.model, a
                               token-classification folder (e.g. a local copy of
                               microsoft/llmlingua-2-xlm-roberta-large-meetingbank)
selective-context-0.3          one stage: the same with Selective Context (the run's model scores)
gpt4-compression-0.3           one stage: the same by an OpenAI-compatible chat model; needs
                               compression.endpoint (compression.api_model defaults to gpt-4)
=============================  ==================================================================

Curricula beyond the paper (docs/results.md, "Where internalization pays"), each compared at equal
optimizer steps with ``promptintern`` and ``direct-no-template``:

=============================  ==================================================================
null-curriculum                the stages' restarts without their content: every stage query-only
                               (tau0 = 0, k0 = 0), as many stages and steps as promptintern
promptintern-one-optimizer     one AdamW state and one linear LR schedule across the stages
promptintern-wsd               one AdamW state across the stages, warm-up-stable-decay: the final
                               anneal (the last 25% of steps) runs on the inference form
promptintern-final-heavy       the step budget split 1 : 1 : 2 (the query-only stage gets half)
promptintern-replay            mixed forms: 25% of every earlier stage's rows in the final form
promptintern-adaptive          one AdamW state and a wsd schedule; stages 1 and 2 end when greedy
                               BLEU of the next stage's form on 32 dev rows (the split's last)
                               stops improving (probed every 4 steps, patience 2), within the
                               same budget
promptintern-distill           context distillation in the query-only stage: its answers also
                               match (KL at T = 2) those of the model fine-tuned on the full prompt
                               for the same budget (Snell et al. 2022)
context-distillation           one query-only stage with that distillation: Snell et al.'s recipe
                               without PromptIntern's stages
context-distillation-          context-distillation, and that teacher also answers 512 training
unlabeled                      queries that are not the run's rows (references set aside), with the
                               full prompt; its kept answers join the query-only stage's rows
                               (train.distill.unlabeled_queries), the budget counted on all of them
=============================  ==================================================================

Fine-tuning on the query alone at other variants' training-token budgets (the tables above hold
optimizer steps equal, and a query-only step trains on far fewer tokens than a templated one). The
multipliers are measured at ``cpu-repro``'s 64 NL2Bash rows (tokens/s x seconds of each stage, in
docs/results/map-64.json): PromptIntern trains on 8.7x direct fine-tuning's tokens, context
distillation with its full-prompt teacher on 18.1x (the teacher's forward pass not counted):

=============================  ==================================================================
direct-no-template-26-passes   direct-no-template, train.total_epochs 26 (3 x 8.7): PromptIntern's
                               training tokens
direct-no-template-54-passes   direct-no-template, train.total_epochs 54 (3 x 18.1): context
                               distillation's, teacher included
direct-no-template-27-passes   direct-no-template, train.total_epochs 27: at 64 rows, as many optimizer
                               steps as context-distillation-unlabeled (3 passes over 64 + 512 rows
                               when it keeps every answer, fewer when it drops some)
=============================  ==================================================================

A variant that needs something the configuration does not provide (LLMLingua-2 without a
token-classifier ``compression.model``, the API compressor without ``compression.endpoint``) raises
``VariantUnavailable`` from ``variant_config``, saying what to set; a sweep reports it as skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from promptintern.compress_llmlingua2 import classifier_error
from promptintern.config import CompressionConfig, RunConfig, _merge, preset_settings, validate_config
from promptintern.models import is_token_classifier, model_architectures
from promptintern.schedule import Schedule


def _compressed_once(method: str) -> dict[str, Any]:
    """The paper's compression baselines: one stage, the template at 0.3 by ``method``, no shots."""
    return {"schedule": {"num_stages": 1, "tau0": 0.3, "k0": 0}, "compression": {"method": method}}


# Overrides per variant; "{k0}" and "{k0_half}" are filled from the preset's schedule.k0.
VARIANTS: dict[str, dict[str, Any]] = {
    "promptintern": {},
    "promptintern-tau-floor-0.3": {"schedule": {"tau_floor": 0.3}},
    "no-example-absorption": {"schedule": {"absorb_examples": False}},
    "no-template-compression": {"schedule": {"absorb_template": False}},
    "schedule-exponential": {"schedule": {"pattern": "exponential"}},
    "schedule-inverse-exponential": {"schedule": {"pattern": "inverse-exponential"}},
    "bank-25": {"retrieval": {"bank_fraction": 0.25}},
    "bank-50": {"retrieval": {"bank_fraction": 0.5}},
    "bank-100": {"retrieval": {"bank_fraction": 1.0}},
    "direct-template-kshot": {"schedule": {"num_stages": 1, "tau0": 1.0, "k0": "{k0}"}},
    "direct-template-0.6-halfk": {"schedule": {"num_stages": 1, "tau0": 0.6, "k0": "{k0_half}"}},
    "direct-template-only": {"schedule": {"num_stages": 1, "tau0": 1.0, "k0": 0}},
    "direct-no-template": {"schedule": {"num_stages": 1, "tau0": 0.0, "k0": 0}},
    "llmlingua-0.3": _compressed_once("llmlingua"),
    "longllmlingua-0.3": _compressed_once("longllmlingua"),
    "llmlingua2-0.3": _compressed_once("llmlingua2"),
    "selective-context-0.3": _compressed_once("selective-context"),
    "gpt4-compression-0.3": _compressed_once("api"),
    "null-curriculum": {"schedule": {"tau0": 0.0, "k0": 0}},
    "promptintern-one-optimizer": {"train": {"reset_optimizer_each_stage": False}},
    "promptintern-wsd": {"train": {"reset_optimizer_each_stage": False, "lr_schedule": "wsd"}},
    "promptintern-final-heavy": {"train": {"stage_weights": [1.0, 1.0, 2.0]}},
    "promptintern-replay": {"schedule": {"replay": 0.25}},
    "promptintern-adaptive": {"train": {"reset_optimizer_each_stage": False, "lr_schedule": "wsd",
                                        "adaptive": {"probe": "generate", "dev_rows": 32, "every": 4, "patience": 2}}},
    "promptintern-distill": {"train": {"distill": {"teacher": "full-prompt-ft"}}},
    "context-distillation": {"schedule": {"num_stages": 1, "tau0": 0.0, "absorb_examples": False},
                             "train": {"distill": {"teacher": "full-prompt-ft"}}},
    "context-distillation-unlabeled": {"schedule": {"num_stages": 1, "tau0": 0.0, "absorb_examples": False},
                                       "train": {"distill": {"teacher": "full-prompt-ft", "unlabeled_queries": 512}}},
    "direct-no-template-26-passes": {"schedule": {"num_stages": 1, "tau0": 0.0, "k0": 0},
                                     "train": {"total_epochs": 26.0}},
    "direct-no-template-54-passes": {"schedule": {"num_stages": 1, "tau0": 0.0, "k0": 0},
                                     "train": {"total_epochs": 54.0}},
    "direct-no-template-27-passes": {"schedule": {"num_stages": 1, "tau0": 0.0, "k0": 0},
                                     "train": {"total_epochs": 27.0}},
}


# The curricula beyond the paper (the second table of the module docstring).
CURRICULA = ("null-curriculum", "promptintern-one-optimizer", "promptintern-wsd", "promptintern-final-heavy",
             "promptintern-replay", "promptintern-adaptive", "promptintern-distill", "context-distillation",
             "context-distillation-unlabeled")


class VariantUnavailable(ValueError):
    """A known variant that this configuration cannot run; the message says what to set."""


def _fill(value: Any, k0: int) -> Any:
    if isinstance(value, dict):
        return {key: _fill(v, k0) for key, v in value.items()}
    if value == "{k0}":
        return k0
    if value == "{k0_half}":
        return k0 // 2
    return value


def variant_overrides(name: str, k0: int) -> dict[str, Any]:
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; allowed: {sorted(VARIANTS)}")
    return _fill(VARIANTS[name], k0)


def _derived(value: Any) -> Any:
    """Only the settings a variant derives from k0 (they must follow the user's k0, not lose to it)."""
    if isinstance(value, dict):
        kept = {key: _derived(v) for key, v in value.items()}
        return {key: v for key, v in kept.items() if v != {}}
    return value if value in ("{k0}", "{k0_half}") else {}


def variant_config(variant: str, preset_name: str = "cpu-demo",
                   overrides: dict[str, Any] | None = None) -> RunConfig:
    """The preset, the variant's settings, the user's overrides (which win), then the variant's
    k0-derived settings computed from the final k0 (``direct-template-0.6-halfk`` with
    ``schedule.k0=10`` trains with 5 shots).

    Raises ``VariantUnavailable`` when the result needs a compressor input nobody configured
    (see the module docstring), ``ValueError`` for an unknown variant or an invalid override."""
    # the preset and the overrides are validated with the variant's settings, not before them: an
    # override may need the variant (train.distill.unlabeled_queries needs a stage without shots)
    base = preset_settings(preset_name, overrides)
    k0 = base.get("schedule", {}).get("k0", Schedule.model_fields["k0"].default)
    if not isinstance(k0, int):
        validate_config(base)  # raises, naming schedule.k0
    merged = _merge(_merge(base, variant_overrides(variant, k0)), overrides or {})
    merged = _merge(merged, _fill(_derived(VARIANTS[variant]), k0))
    _check_available(variant, merged.get("compression", {}))  # defaults need no input
    return validate_config(merged)


def _check_available(variant: str, compression: dict[str, Any]) -> None:
    """What the compressor needs and no validator of a single field can see: for LLMLingua-2 a
    token-classification ``compression.model`` (a local folder is checked now; a hub id when it is
    loaded), for the API compressor an ``endpoint``."""
    method, model = compression.get("method"), compression.get("model")
    if method == "llmlingua2":
        looks_local = model is not None and (Path(model).exists() or model.startswith((".", "/", "~")))
        if model is None or (looks_local and not is_token_classifier(model_architectures(model))):
            raise VariantUnavailable(f"variant {variant!r} is unavailable: {classifier_error(model)}")
    if method == "api" and not compression.get("endpoint"):
        raise VariantUnavailable(
            f"variant {variant!r} is unavailable: compression.endpoint is not set; "
            f"{CompressionConfig.ENDPOINT_HINT}")
