"""One typed config for a run of the DAG, and the named presets.

``RunConfig`` is the flow's parameter: every baseline and ablation is a value of it. Unknown keys
are errors (``extra="forbid"``), so a typo in a preset or an override names the key.

    from promptintern.config import preset
    cfg = preset("cpu-demo")                                   # the README's main job
    cfg = preset("tiny", overrides={"schedule": {"k0": 4}})    # what the tests run

Presets (sizes chosen for 2 CPU cores unless stated):

* ``tiny``     the locally built random model, a handful of rows: the end-to-end tests (seconds).
* ``cpu-demo`` SmolLM2-135M on NL2Bash, 3 stages (k 2-1-0, tau 1 -> 0), 64 training rows,
               the first 40 test rows, beside fine-tuning on the query alone at equal steps:
               6 minutes of flow on 2 cores (361 s measured) after set-up.
* ``cpu-repro`` docs/results.md (``python -m flows.reproduce``): SmolLM2-135M, 64 training rows, k 2-1-0,
               the same optimizer steps for every variant (3 passes over the rows, split over the
               stages), the first 300 test rows (NL2Bash) / all 500 test tasks (MBPP): hours on 2 cores.
* ``paper``    the paper's settings (rank 32, k 10-5-0, every training row, the full test split):
               for a GPU.
* ``gpu-1b``   one GPU, a 1-2B model (SmolLM2-1.7B-Instruct; Qwen2.5-1.5B class): the paper's
               recipe (NL2Bash: 12 epochs, batch 128; MBPP: 6 epochs, batch 16; rank 32, k 10-5-0).
* ``gpu-7b``   the paper's run: Llama-2-7B, the same recipe, gradient checkpointing on
               (``--preset gpu-7b --model <folder or hub id>`` for another 7B; ``train.quantize_base=4bit``
               where bf16 weights do not fit).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from promptintern.schedule import Schedule

COMPRESSORS = ("llmlingua", "longllmlingua", "llmlingua2", "selective-context", "api", "none")
SCORERS = ("bleu", "bm25")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """A configuration that does not validate; the message names every bad key, with the allowed
    keys and the nearest match for an unknown one."""


class CompressionConfig(_Strict):
    """How templates are compressed (``promptintern.compress.compress_template``).

    ``model`` is the scorer for the local methods; ``endpoint``, ``api_model``, ``api_key_env`` and
    ``api_timeout_s`` configure ``method="api"``. The API key itself is never part of the config:
    only the name of the environment variable that holds it.
    """

    # a key pasted into api_key_env by mistake must not be echoed into logs by a validation error
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    # What to set when a method lacks its model or endpoint (the compressors raise with these too).
    CLASSIFIER_HINT: ClassVar[str] = (
        "LLMLingua-2 needs a token-classification model folder (config.json architectures ending in "
        "'ForTokenClassification') as compression.model, such as a local copy of "
        "microsoft/llmlingua-2-xlm-roberta-large-meetingbank: "
        "--set compression.model=/path/to/llmlingua-2-xlm-roberta-large-meetingbank")
    ENDPOINT_HINT: ClassVar[str] = (
        "the 'api' compressor needs an OpenAI-compatible endpoint: --set compression.endpoint=http://host:8000/v1 "
        "--set compression.api_model=gpt-4 (the key is read from the environment variable named by "
        "compression.api_key_env, default OPENAI_API_KEY)")

    method: Literal["llmlingua", "longllmlingua", "llmlingua2", "selective-context", "api", "none"] = Field(
        "llmlingua", description=f"template compressor, one of {COMPRESSORS}")
    model: str | None = Field(
        None, description="scoring model: a causal LM for llmlingua / longllmlingua / selective-context "
                          "(default: the run's model); for llmlingua2 a token-classification model "
                          "folder such as a local copy of microsoft/llmlingua-2-xlm-roberta-large-meetingbank")
    endpoint: str | None = Field(
        None, description="method=api: base URL of an OpenAI-compatible API, e.g. http://host:8000/v1")
    api_model: str = Field("gpt-4", description="method=api: the model the endpoint serves (paper: GPT-4)")
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="method=api: name of the environment variable holding the API key")
    api_timeout_s: float = Field(120.0, gt=0.0, description="method=api: seconds to wait for an answer")
    by_kind: dict[Literal["instruction", "document"],
                  Literal["llmlingua", "longllmlingua", "llmlingua2", "selective-context", "api", "none"]] = Field(
        default_factory=dict,
        description="a compressor per kind of template section (the task file marks sections instruction or "
                    "document), e.g. {instruction: none, document: llmlingua}: each section is then "
                    "compressed on its own at the stage's rate; kinds not named use method")

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_a_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"compression.endpoint={value!r}: give the API's base URL, e.g. http://host:8000/v1")
        return value

    @field_validator("api_model")
    @classmethod
    def _api_model_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("compression.api_model must name the model the endpoint serves, e.g. gpt-4")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _api_key_env_is_a_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(
                "compression.api_key_env: give the *name* of the environment variable holding the "
                "API key (letters, digits, underscores; e.g. OPENAI_API_KEY), never the key itself")
        return value

    @model_validator(mode="after")
    def _one_model_serves_every_kind(self) -> CompressionConfig:
        # one compressor model per run: a causal LM scores llmlingua / longllmlingua / selective-context,
        # LLMLingua-2 needs a classifier, the API none of them
        family = {m: ("lm" if m in ("llmlingua", "longllmlingua", "selective-context") else m)
                  for m in COMPRESSORS}
        used = {family[m] for m in (self.method, *self.by_kind.values()) if m != "none"}
        if len(used) > 1:
            raise ValueError(f"compression.by_kind={dict(self.by_kind)} with method={self.method!r}: the kinds "
                             f"need different compressor models; combine only llmlingua, longllmlingua, "
                             f"selective-context and none (or one other method with none)")
        return self

    @model_validator(mode="after")
    def _method_has_what_it_needs(self) -> CompressionConfig:
        if self.method == "api" and self.endpoint is None:
            raise ValueError(f"compression.endpoint is not set: {self.ENDPOINT_HINT}")
        if self.method == "llmlingua2" and self.model is None:
            raise ValueError(f"compression.model is not set: {self.CLASSIFIER_HINT}")
        return self


class RetrievalConfig(_Strict):
    scorer: Literal["bleu", "bm25"] = Field("bleu", description=f"similarity, one of {SCORERS}")
    bank_fraction: float = Field(1.0, gt=0.0, le=1.0, description="share of training rows in the pool")


class HardwareSettings(_Strict):
    """Where the boxes that run a model (train, teacher, merge, benchmark, the compressors) run it, in
    which number format (``promptintern.device``). ``auto``/``auto``: a CUDA GPU in bf16 (fp16 with loss
    scaling where it lacks bf16) when torch sees one, else the CPU in fp32. Cache keys and ``--resume``
    digests hold the device kind and dtype, never which GPU."""

    device: str = Field("auto", description="auto, cpu, cuda or cuda:<index>")
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="the weights' format: auto (bf16 / fp16 on a GPU, fp32 on the CPU), fp32, bf16, fp16; "
                            "LoRA weights and optimizer state stay fp32, the forward runs under autocast")

    @field_validator("device")
    @classmethod
    def _device_form(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError(f"hardware.device={value!r}: allowed auto, cpu, cuda, cuda:<index>")
        return value

    def resolve(self):
        """The ``promptintern.device.Hardware`` these settings mean on this machine (``DeviceError``
        naming the setting when it cannot honour them)."""
        from promptintern.device import resolve

        return resolve(self.device, self.dtype)


ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraSettings(_Strict):
    r: int = Field(32, ge=1, description="LoRA rank (paper: 32)")
    alpha: int = Field(64, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


class AdaptiveSettings(_Strict):
    """Adaptive stage lengths (``promptintern.curriculum``): a stage before the last ends when the dev
    metric of the *next* stage's prompt form stops improving, within the run's fixed step budget."""

    probe: Literal["generate", "nll"] = Field(
        "generate", description="the dev metric: the task's own metric on greedy answers (generate), or the "
                                "negated teacher-forced loss of the references (nll; cheaper, and it did not "
                                "predict greedy BLEU on NL2Bash)")
    dev_split: str | None = Field(None, description="the split the probe rows come from (never the test split); "
                                                    "None: the task's dev, validation or valid split")
    dev_rows: int = Field(32, ge=1, description="first N rows of dev_split")
    every: int = Field(4, ge=1, description="optimizer steps between probes")
    patience: int = Field(2, ge=1, description="probes without improvement before the stage ends")
    min_delta: float = Field(0.0, ge=0.0, description="an improvement must exceed this")
    min_steps: int = Field(4, ge=1, description="steps every stage trains at least (so later stages keep some)")


class DistillSettings(_Strict):
    """Context distillation (``promptintern.distill``): rows in the inference form also match the answer
    distribution a teacher gives with the full prompt (Snell et al. 2022)."""

    teacher: Literal["base", "stage1", "full-prompt-ft"] = Field(
        "full-prompt-ft", description="the untuned model with the full prompt (base), the adapter after stage 1 "
                                      "(stage1), or a model fine-tuned on the full prompt for the run's budget "
                                      "(full-prompt-ft: the direct-template-kshot model)")
    weight: float = Field(1.0, ge=0.0, description="loss = cross-entropy + weight * T^2 * KL")
    temperature: float = Field(2.0, gt=0.0, description="T: both distributions are softened by it")
    top_k: int = Field(64, ge=1, description="teacher tokens kept per answer position (the KL runs over them)")
    unlabeled_queries: int | None = Field(
        None, ge=1, description="that many queries nobody has answered (the task's unlabeled split, else training "
                                "rows past train_subset, references set aside), answered by the teacher with the "
                                "full prompt; the kept answers join the student's rows "
                                "(sequence-level distillation: cross-entropy on the teacher's answer). None: the "
                                "labeled rows only")


class TrainSettings(_Strict):
    epochs_per_stage: float = Field(1.0, gt=0.0, description="passes over the shard per stage")
    total_epochs: float | None = Field(
        None, gt=0.0, description="equal-steps budget: passes over the training rows summed over all stages; "
                                  "when set, every stage trains total_epochs / schedule.num_stages epochs "
                                  "(epochs_per_stage is derived), so one-stage baselines and staged runs take "
                                  "the same number of optimizer steps")
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(2e-4, gt=0.0)
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    max_seq_len: int = Field(1024, ge=16, description="longer rows lose prompt tokens from the left")
    checkpoint_every: int = Field(50, ge=1, description="optimizer steps between checkpoints")
    reset_optimizer_each_stage: bool = Field(
        True, description="True: every stage starts a fresh AdamW and its own warm-up/decay; False: one AdamW "
                          "state and one LR schedule run across all stages (the adapter always carries on)")
    stage_weights: tuple[float, ...] | None = Field(
        None, description="split the run's step budget (epochs_per_stage x num_stages passes) across the stages "
                          "by weight, one per stage: [1, 1, 2] gives the final form half the steps; None: "
                          "epochs_per_stage each")
    lr_schedule: Literal["linear", "wsd", "constant"] = Field(
        "linear", description="after warm-up: linear decay to the end, wsd (stable, then a linear decay over the "
                              "last decay_ratio of the steps), or constant (promptintern.curriculum)")
    decay_ratio: float = Field(0.25, gt=0.0, le=1.0, description="lr_schedule=wsd: share of the steps in the "
                                                                 "final decay")
    distill: DistillSettings | None = Field(
        None, description="context distillation from a full-prompt teacher on the rows in the inference form; "
                          "None: cross-entropy only")
    adaptive: AdaptiveSettings | None = Field(
        None, description="adaptive stage lengths: a stage ends when the next stage's form stops improving on "
                          "dev rows; None: fixed lengths (stage_weights / epochs)")
    gradient_checkpointing: bool = Field(
        False, description="recompute each decoder layer's activations in the backward pass instead of keeping "
                           "them: activation memory falls from every layer's to one layer's plus each layer's input, "
                           "for one more forward pass a step; same loss and gradients")
    quantize_base: Literal["4bit"] | None = Field(
        None, description="4bit: the frozen base in NF4 through bitsandbytes (QLoRA; CUDA and the gpu extra), "
                          "for models whose bf16 weights do not fit; the merge folds the adapter into the "
                          "de-quantized base. None: the base in hardware.dtype")
    processes: int = Field(
        1, ge=1, description="data-parallel training of a stage: this many processes (one per GPU, or gloo on "
                             "the CPU) started by torchrun, each a slice of every batch, gradients summed; the "
                             "same adapter as one process up to floating-point order")
    share_prompt_prefix: bool = Field(
        True, description="run the token prefix a batch's rows share (the template) once per batch; "
                          "same loss and gradients, ~2x faster on stage-1 prompts (benchmarks/bench_train.py)")
    seed: int = 0

    @field_validator("stage_weights")
    @classmethod
    def _weights_positive(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and (not value or any(w <= 0 for w in value)):
            raise ValueError(f"train.stage_weights={list(value)}: give one positive weight per stage, e.g. [1, 1, 2]")
        return value


class EvalSettings(_Strict):
    test_split: str = "test"
    test_subset: int | None = Field(None, ge=1, description="first N test rows (None: all)")
    batch_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(64, ge=1)
    baseline_full_prompt: bool = Field(
        True, description="also run the base model with the full template + k0-shot prompt")
    baseline_direct: bool = Field(
        True, description="also fine-tune on the query alone (direct-no-template) for as many optimizer steps as "
                          "the run takes, and benchmark it beside the run's model: the honest comparison")
    baseline_query_only: bool = Field(
        True, description="also run the untuned base model on the query alone")
    sandbox: Literal["auto", "bwrap", "namespaces", "rlimits"] = Field(
        "auto", description="isolation for executed code (MBPP); see promptintern.sandbox")
    sandbox_workers: int = Field(2, ge=1, description="programs run in parallel")
    sandbox_timeout_s: float = Field(10.0, gt=0, description="CPU seconds per program (what judges a slow one); "
                                                              "the wall-clock guard against sleeping or blocked programs is 3x")
    price_model: str = Field("gpt-4", description="price-table model for the report's cost column")
    prefix_cache: bool = Field(
        True, description="prefill the token prefix every prompt shares (the template) once and reuse it, as "
                          "serving stacks do (same answers; promptintern.decode)")
    precision: Literal["fp32", "bf16", "fp16", "int8-dynamic"] | None = Field(
        None, description="the weights' format for generation; None: hardware.dtype (fp32 on the CPU). On a CPU, "
                          "bf16 or int8-dynamic Linear layers are faster and change answers "
                          "(benchmarks/bench_quantize.py measures by how much)")
    cache_timing_rows: int = Field(
        16, ge=0, description="for prompts with a template: time this many test rows with and without the prefix "
                              "cache, side by side, for the report's 'template cached' row (0: not measured)")


class RunConfig(_Strict):
    """Everything one run of the ``promptintern`` flow depends on."""

    dataset: str = Field("nl2bash", description="the task: a built-in name (nl2bash, mbpp, nl2f) or a task "
                                                "file (YAML / TOML, see promptintern.taskfile)")
    data_dir: str = Field("data", description="folder filled by `python -m promptintern.data fetch`")
    model: str = Field("smollm2-135m", description="'smollm2-135m', 'tiny', a local folder or a hub id")
    train_subset: int | None = Field(None, ge=1, description="first N shuffled training rows")
    schedule: Schedule = Schedule()
    compression: CompressionConfig = CompressionConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    lora: LoraSettings = LoraSettings()
    train: TrainSettings = TrainSettings()
    eval: EvalSettings = EvalSettings()
    hardware: HardwareSettings = HardwareSettings()
    seed: int = Field(0, description="seed for subsetting and the bank pool")
    chat: Literal["auto", "on", "off"] | None = Field(
        None, description="prompts through the model's chat template (system = template, user = examples + "
                          "query): auto when the model has one; None: the task file's prompt.chat")

    @model_validator(mode="before")
    @classmethod
    def _split_epoch_budget(cls, data: Any) -> Any:
        """``train.total_epochs`` set: derive ``train.epochs_per_stage`` from it and the stage count.
        Values of the wrong type are left for the field validators to report by key."""
        if not isinstance(data, dict):
            return data
        train, schedule = data.get("train"), data.get("schedule")
        train = train.model_dump() if isinstance(train, BaseModel) else train
        schedule = schedule.model_dump() if isinstance(schedule, BaseModel) else (schedule or {})
        if not isinstance(train, dict) or not isinstance(schedule, dict):
            return data
        total, stages = train.get("total_epochs"), schedule.get("num_stages", Schedule().num_stages)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (total, stages))
        if not numbers:
            return data
        return {**data, "train": {**train, "epochs_per_stage": total / stages}}

    @model_validator(mode="after")
    def _probe_is_not_the_test_split(self) -> RunConfig:
        if self.train.adaptive is not None:
            self.probe_split()  # raises with the key to set
        return self

    def probe_split(self) -> str | None:
        """The split adaptive stage lengths probe (``train.adaptive.dev_split``, else the task's
        dev / validation / valid split); None without ``train.adaptive``."""
        adaptive = self.train.adaptive
        if adaptive is None:
            return None
        from promptintern.datasets import UNLABELED, get_task

        held_out = [s for s in get_task(self.dataset).splits if s not in ("train", UNLABELED)]
        split = adaptive.dev_split or next((s for s in ("dev", "validation", "valid") if s in held_out), None)
        if split not in held_out:
            raise ValueError(f"train.adaptive.dev_split={split!r}: dataset {self.dataset!r} has no held-out split "
                             f"of that name; allowed: {held_out}")
        # the probe takes the split's *last* rows, the benchmark its first: one split serves both only
        # when the benchmark takes a subset (the dataset box checks that they do not meet)
        if split == self.eval.test_split and self.eval.test_subset is None:
            raise ValueError(f"train.adaptive.dev_split={split!r} is eval.test_split and eval.test_subset is not "
                             f"set: stage lengths chosen on the scored rows would be scored on what chose them; "
                             f"probe another split, or score a subset (eval.test_subset)")
        return split

    @model_validator(mode="after")
    def _stage1_teacher_needs_a_later_stage(self) -> RunConfig:
        distill = self.train.distill
        if distill is not None and distill.teacher == "stage1" and self.schedule.num_stages < 2:
            raise ValueError("train.distill.teacher='stage1' teaches the stages after stage 1, and "
                             f"schedule.num_stages={self.schedule.num_stages}: use teacher base or full-prompt-ft")
        if distill is not None and distill.unlabeled_queries:
            if distill.teacher == "stage1":
                raise ValueError("train.distill.unlabeled_queries: the teacher answers the queries before training "
                                 "starts, and teacher='stage1' exists only after stage 1: use base or full-prompt-ft")
            with_shots = [s.stage for s in self.schedule.stages() if s.k]
            if with_shots:
                raise ValueError(f"train.distill.unlabeled_queries: the teacher-answered rows have no retrieved "
                                 f"shots, and stages {with_shots} train with shots: set schedule.absorb_examples=false "
                                 f"(or schedule.k0=0)")
        return self

    @model_validator(mode="after")
    def _hardware_settings_agree(self) -> RunConfig:
        train = self.train
        if train.processes > 1 and train.adaptive is not None:
            raise ValueError(f"train.processes={train.processes} with train.adaptive: the dev probe runs in one "
                             f"process; set train.processes=1 for adaptive stage lengths")
        if train.quantize_base is not None and self.hardware.device == "cpu":
            raise ValueError("train.quantize_base='4bit' needs a CUDA GPU (bitsandbytes); hardware.device='cpu': "
                             "set hardware.device=cuda (or auto), or train.quantize_base=null")
        if self.eval.precision == "fp16" and self.hardware.device == "cpu":
            raise ValueError("eval.precision='fp16' on the CPU (hardware.device='cpu'): use fp32, bf16 or int8-dynamic")
        return self

    @model_validator(mode="after")
    def _one_weight_per_stage(self) -> RunConfig:
        weights = self.train.stage_weights
        if weights is not None and len(weights) != self.schedule.num_stages:
            raise ValueError(f"train.stage_weights={list(weights)} has {len(weights)} weights for "
                             f"schedule.num_stages={self.schedule.num_stages}: give one weight per stage")
        return self

    @field_validator("model")
    @classmethod
    def _model_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model must name 'smollm2-135m', 'tiny', a folder or a hub id")
        return value

    @model_validator(mode="after")
    def _test_split_exists(self) -> RunConfig:
        from promptintern.datasets import get_task

        splits = get_task(self.dataset).splits  # reads and validates a task file: its errors name file:line: key
        if self.eval.test_split not in splits:
            raise ValueError(f"eval.test_split={self.eval.test_split!r}: dataset {self.dataset!r} has no "
                             f"such split; allowed: {list(splits)}")
        return self


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "model": "tiny",
        "train_subset": 24,
        "schedule": {"num_stages": 3, "k0": 2},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ALL_LINEAR},
        "train": {"batch_size": 4, "max_seq_len": 512, "checkpoint_every": 2, "lr": 1e-3},
        "eval": {"test_subset": 6, "batch_size": 3, "max_new_tokens": 8},
    },
    "cpu-demo": {
        # ~100 target+prompt tokens/s of LoRA training on 2 cores: 64 rows x 3 stages is ~11 min
        "model": "smollm2-135m",
        "train_subset": 64,
        "schedule": {"num_stages": 3, "k0": 2},
        "lora": {"r": 16, "alpha": 32},
        "train": {"batch_size": 4, "max_seq_len": 1024, "lr": 1e-3, "checkpoint_every": 4},
        "eval": {"test_subset": 40, "batch_size": 8, "max_new_tokens": 32},
    },
    "cpu-repro": {
        # docs/results.md. Equal steps: 3 passes over 64 rows for every variant = 48 optimizer steps,
        # one pass per stage for PromptIntern, three in its one stage for a direct baseline.
        "model": "smollm2-135m",
        "train_subset": 64,
        "schedule": {"num_stages": 3, "k0": 2},
        "lora": {"r": 16, "alpha": 32},
        "train": {"batch_size": 4, "max_seq_len": 1024, "lr": 1e-3, "checkpoint_every": 8, "total_epochs": 3.0},
        # NL2Bash references: median 15 SmolLM2 tokens, 99th percentile 56
        "eval": {"test_subset": 300, "batch_size": 8, "max_new_tokens": 48},
        "chat": "off",  # docs/results.md was measured on plain-text prompts
    },
    "paper": {
        "model": "smollm2-135m",
        "schedule": {"num_stages": 3, "k0": 10},
        "lora": {"r": 32, "alpha": 64},
        "train": {"batch_size": 8, "max_seq_len": 2048, "epochs_per_stage": 1.0},
        "eval": {"max_new_tokens": 64},
    },
}


# The paper's appendix: LoRA rank 32 on NL2Bash for 12 epochs at batch 128, on MBPP for 6 epochs at
# batch 16 (k 10-5-0 / 5-2-0), split over three stages (4 and 2 epochs a stage).
_GPU_RECIPE = {
    "schedule": {"num_stages": 3, "k0": 10},
    "lora": {"r": 32, "alpha": 64, "target_modules": ALL_LINEAR},
    "train": {"total_epochs": 12.0, "lr": 2e-4, "checkpoint_every": 50},
    "eval": {"max_new_tokens": 64, "batch_size": 32},
    "hardware": {"device": "auto", "dtype": "auto"},
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


PRESETS["gpu-1b"] = _merge(_GPU_RECIPE, {
    "model": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
    # 16 rows a step x 8 accumulated = the paper's 128; SmolLM2's context is 8,192
    "train": {"batch_size": 16, "grad_accum": 8, "max_seq_len": 4096},
})
PRESETS["gpu-7b"] = _merge(_GPU_RECIPE, {
    "model": "meta-llama/Llama-2-7b-hf",
    # 8 rows x 16 accumulated = 128; Llama-2's context is 4,096; activations recomputed (bf16 weights
    # 12.6 GB, so a 24 GB GPU also wants train.quantize_base=4bit)
    "train": {"batch_size": 8, "grad_accum": 16, "max_seq_len": 4096, "gradient_checkpointing": True},
    "eval": {"batch_size": 16},
})

# Per-dataset settings of a preset, applied before the user's overrides: the paper uses k 10-5-0,
# but 5-2-0 on MBPP (its prompts carry whole programs).
DATASET_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"mbpp": {"schedule": {"k0": 5}}},
    # MBPP in the paper: 6 epochs at batch 16 (k 5-2-0); programs need room to be written
    **{name: {"mbpp": {"schedule": {"k0": 5}, "train": {"total_epochs": 6.0, "grad_accum": 16 // batch},
                       "eval": {"max_new_tokens": 512}}}
       for name, batch in (("gpu-1b", 16), ("gpu-7b", 8))},
    # MBPP: the standard 500 test tasks; whole programs need room (reference solutions in SmolLM2
    # tokens: median 56, 95th percentile 173, max 420).
    "cpu-repro": {"mbpp": {"eval": {"test_subset": None, "max_new_tokens": 192},
                           # template + 2-shot MBPP rows run to ~1,300 SmolLM2 tokens: at 1,024, 12 of 64
                           # lost 11-272 prompt tokens from the left (5 the whole template), while the
                           # full-prompt benchmark is never cut. The model's context is 8,192.
                           "train": {"max_seq_len": 2048}}},
}


def preset(name: str, overrides: dict[str, Any] | None = None) -> RunConfig:
    """A preset, with nested ``overrides`` applied on top (dict keys mirror RunConfig's fields)."""
    return validate_config(preset_settings(name, overrides))


def preset_settings(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``preset``'s settings before validation (what a variant's settings go on top of)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; allowed: {sorted(PRESETS)}")
    overrides = overrides or {}
    dataset = overrides.get("dataset", PRESETS[name].get("dataset", "nl2bash"))
    base = _merge(PRESETS[name], DATASET_DEFAULTS.get(name, {}).get(dataset, {}))
    k0 = task_file_k0(dataset)
    if k0 is not None:  # run override > the task file's shots.k0 > the preset
        base = _merge(base, {"schedule": {"k0": k0}})
    return _merge(base, overrides)


def validate_config(data: dict[str, Any]) -> "RunConfig":
    """``RunConfig.model_validate`` with errors a person can act on (``ConfigError``)."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_errors(err)) from None


def describe_errors(err: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line per problem: ``train.lrr: unknown key; did you mean lr? allowed: ...``, or the
    key, what is wrong and the value given."""
    import difflib

    model = model or RunConfig
    lines = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-"))]
        key = ".".join(loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            allowed = _fields_at(model, loc[:-1])
            near = difflib.get_close_matches(loc[-1], allowed, n=1, cutoff=0.6)
            lines.append(f"{key}: unknown key" + (f"; did you mean {'.'.join(loc[:-1] + near)}?" if near else "")
                         + (f"{' ' if near else '; '}allowed under {'.'.join(loc[:-1]) or 'the top level'}: "
                            f"{', '.join(allowed)}" if allowed else ""))
        else:
            given = e.get("input")
            # echo a short scalar only, never a value that may be a secret pasted by mistake
            secret = any(word in key.lower() for word in ("key", "secret", "token", "password"))
            shown = (not secret and isinstance(given, (int, float, str, bool)) and len(repr(given)) <= 80)
            msg = e["msg"].removeprefix("Value error, ")
            # a validator's own message names its key already (and a model-level one, the keys)
            where = "" if not loc or msg.startswith(key) else f"{key}: "
            lines.append(f"{where}{msg}" + (f" (given: {given!r})" if shown else ""))
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _fields_at(model: type[BaseModel], path: Sequence[str]) -> list[str]:
    """The field names of the (nested) model at ``path`` of ``model``."""
    for part in path:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        inner = next((a for a in (annotation, *get_args(annotation))
                      if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if inner is None:
            return []
        model = inner
    return sorted(model.model_fields)


def task_file_k0(dataset: str) -> int | None:
    """The ``shots.k0`` a user's task file declares (None: not a task file, or it does not say).
    The built-in tasks' files carry the paper's k (NL2Bash 10, MBPP 5): for them each preset's own
    k0 holds (the CPU presets use 2; ``paper`` uses the paper's)."""
    from promptintern.taskfile import BUILTIN_DIR, SUFFIXES, read_task_file

    path = Path(dataset)
    if not dataset.endswith(SUFFIXES) or not path.is_file() or path.resolve().parent == BUILTIN_DIR.resolve():
        return None  # a built-in name or file; or a missing file, which the up-front checks name
    shots = read_task_file(path).shots
    return shots.k0 if "k0" in shots.model_fields_set else None
