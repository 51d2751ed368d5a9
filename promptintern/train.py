"""Progressive LoRA fine-tuning: one stage of training on one shard, the adapter carried on.

``train_stage`` trains a LoRA adapter on a stage shard (see ``promptintern.shards``), starting
from the previous stage's adapter when given one, so a single adapter absorbs the template and
examples stage by stage. The loss is taken on target tokens only: every prompt token has label
-100 (``encode_row``), so the model learns to answer, not to recite the template.

Work happens in ``work_dir``; every ``checkpoint_every`` optimizer steps the adapter, optimizer,
LR scheduler, RNG states and the data position are saved to ``work_dir/checkpoint`` and a rerun
resumes from there, to the bitwise same adapter as an uninterrupted run (on the CPU; tested both
in-process and for a ``kill -9`` of the whole flow, ``tests/test_resume_flow.py``). A checkpoint is
written beside the old one and swapped in by renames, so a kill at any instant leaves one whole
checkpoint to resume from. Per-step losses go to ``work_dir/log.jsonl``.

Batches are length-grouped (rows of similar length share a batch, batch order shuffled), which
cuts padding several-fold on rows whose prompts range from 40 to 1,000 tokens.

On a GPU (``hardware``, ``promptintern.device``): the frozen base in the hardware's dtype (or 4-bit,
``train.quantize_base``), the LoRA weights and AdamW state in fp32, the forward under autocast, fp16
with a loss scaler; ``train.gradient_checkpointing`` recomputes activations in the backward pass.
With ``train.processes`` > 1 (``promptintern.launch``) each process takes a slice of every batch and
the gradients are summed: the same update as one process up to floating-point order.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from promptintern.config import LoraSettings, TrainSettings
from promptintern.curriculum import (StagePlan, StageProbe, batches_for_steps, lr_factor, plan_batches, should_advance,
                                     steps_for_epochs, warmup_steps)
from promptintern.distill import TeacherLogits, distill_loss
from promptintern.cpu import set_torch_threads
from promptintern.models import load_model, load_tokenizer
from promptintern.shards import read_shard

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
CHECKPOINT = "checkpoint"
# The swap's other two names: the next checkpoint while it is written, the last one while it is
# replaced. ``checkpoint/state.pt`` is written last, so its presence means a whole checkpoint.
CHECKPOINT_NEXT, CHECKPOINT_PREV = CHECKPOINT + ".tmp", CHECKPOINT + ".old"
# The AdamW state a stage leaves for the next when one optimizer runs across stages
# (``train.reset_optimizer_each_stage: false``), beside the adapter in the stage's folder.
OPTIMIZER_STATE = "optimizer.pt"
__all__ = ["plan_batches", "train_stage", "encode_row", "collate", "target_loss", "target_logits"]


def encode_row(tokenizer, prompt: str, target: str, max_seq_len: int) -> tuple[list[int], list[int]]:
    """Token ids and labels for one row: labels are -100 on the prompt, the ids on target + EOS.

    Prompt and target are tokenized separately, exactly as at inference (where the model sees the
    prompt's tokens and generates the target's). Over-long rows lose prompt tokens from the left:
    the query and answer cue, at the end of the prompt, always survive (``train_stage`` counts
    such rows and says so: ``rows_truncated`` in the stage's stats and the run report).
    """
    return fit_row(*row_tokens(tokenizer, prompt, target), max_seq_len)


def row_tokens(tokenizer, prompt: str, target: str) -> tuple[list[int], list[int]]:
    """A row's prompt ids and target ids + EOS, tokenized separately, whole."""
    return (tokenizer(prompt, add_special_tokens=False)["input_ids"],
            tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])


def fit_row(prompt_ids: list[int], target_ids: list[int], max_seq_len: int) -> tuple[list[int], list[int]]:
    """``encode_row`` from token ids: the prompt cut from the left to fit ``max_seq_len``."""
    budget = max_seq_len - len(target_ids)
    if budget < 1:
        raise ValueError(
            f"a target of {len(target_ids)} tokens leaves no room for its prompt under "
            f"train.max_seq_len={max_seq_len}; raise train.max_seq_len"
        )
    prompt_ids = prompt_ids[-budget:]
    return prompt_ids + target_ids, [IGNORE_INDEX] * len(prompt_ids) + target_ids


def check_memory(model_dir: Path, lora: LoraSettings, batch_size: int, encoded: Sequence[tuple[list[int], list[int]]],
                 stage: int, share_prefix: bool = True, hardware=None, gradient_checkpointing: bool = False,
                 quantize: str | None = None) -> None:
    """Before the model is loaded: estimate what a step of this stage needs (``promptintern.memory``,
    for its longest rows, with the prompt prefix every row shares run once when ``share_prefix``)
    and stop with what to change when the machine does not have it."""
    from promptintern.artifacts import ResourceExhausted
    from promptintern.memory import available_memory, estimate_training, shortfall

    settings = {"r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout, "target_modules": list(lora.target_modules)}
    seq_len = max(len(ids) for ids, _ in encoded)
    answers = max(sum(t != IGNORE_INDEX for t in labels) for _, labels in encoded)
    shared = 0
    if share_prefix and len(encoded) > 1:  # the template: what every prompt starts with
        prompts = [ids[: sum(t == IGNORE_INDEX for t in labels)] for ids, labels in encoded]
        shared = len(os.path.commonprefix(prompts))
    try:
        kind = dict(dtype=hardware.dtype, device=hardware.device, attention=hardware.attention()) if hardware else {}
        estimate = estimate_training(model_dir, settings, batch_size, seq_len, answers, shared_prefix=shared,
                                     gradient_checkpointing=gradient_checkpointing, quantize=quantize, **kind)
    except Exception as err:  # an architecture the meta-device probe cannot build: train without the check
        log.warning("stage %d: no memory estimate for %s (%s: %s)", stage, model_dir, type(err).__name__, err)
        return
    log.info("stage %d: a training step needs %s (batch %d, longest row %d tokens, %d shared)", stage,
             estimate.describe(), batch_size, seq_len, shared)
    problem = shortfall(estimate, available_memory(hardware.device if hardware else "cpu"))
    if problem is not None:
        raise ResourceExhausted(f"stage {stage}: {problem}", "memory")


def shared_prefix_len(batch: dict[str, torch.Tensor], min_len: int = 16) -> int:
    """Length of the token prefix every row of the batch shares, inside every row's prompt.

    Capped one token short of the shortest prompt, so the position that predicts a row's first
    target token is always the row's own. 0 for a single row or a prefix under ``min_len``.
    """
    ids, labels = batch["input_ids"], batch["labels"]
    if ids.shape[0] < 2:
        return 0
    same = (ids == ids[:1]).all(dim=0)
    common = int(same.long().cumprod(0).sum())
    prompt_lens = (labels == IGNORE_INDEX).long().cumprod(1).sum(1)
    n = min(common, int(prompt_lens.min()) - 1)
    return n if n >= min_len else 0


def target_loss(model, batch: dict[str, torch.Tensor], share_prefix: bool = True) -> torch.Tensor:
    """Mean cross-entropy over target tokens, projecting only those positions onto the vocabulary
    (``target_logits``)."""
    logits, targets, _ = target_logits(model, batch, share_prefix)
    return torch.nn.functional.cross_entropy(logits.float(), targets)


def target_logits(model, batch: dict[str, torch.Tensor],
                  share_prefix: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits at the positions that predict target tokens, the tokens they predict, and the mask
    ``keep`` [rows, positions] they were taken at (row by row, in order: row r's j-th logit predicts
    its j-th target token).

    Equal to ``model(**batch).loss`` (a test checks it), but the LM head (576 x 49,152 for
    SmolLM2, a fifth of the model's FLOPs per token) runs on the ~5% of positions that are
    targets instead of every prompt token.

    With ``share_prefix``, the token prefix all rows share (the template, at stage 1 two thirds of
    every prompt) runs once: its keys and values are computed for one row and repeated across the
    batch, and the rows run only their own suffixes on top. Causal attention makes that the same
    function (equal to fp32 rounding; gradients from every row flow back into the one prefix
    pass); only LoRA dropout on the prefix is drawn once for the batch instead of once per row.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    n = shared_prefix_len(batch) if share_prefix else 0
    if n:
        cache = decoder(input_ids=ids[:1, :n], use_cache=True).past_key_values
        cache.batch_repeat_interleave(ids.shape[0])
        positions = torch.arange(n, ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        hidden = decoder(input_ids=ids[:, n:], attention_mask=mask, past_key_values=cache,
                         position_ids=positions, use_cache=True)[0]
        labels = labels[:, n:]
    else:
        hidden = decoder(input_ids=ids, attention_mask=mask)[0]
    labels = labels[:, 1:]
    keep = labels != IGNORE_INDEX
    logits = base.get_output_embeddings()(hidden[:, :-1][keep])
    return logits, labels[keep], keep


def collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padded positions get attention 0 and label -100."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        attention[i, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


@dataclass
class StageReport:
    stage: int
    rows: int
    optimizer_steps: int
    micro_batches: int
    first_loss: float
    final_loss: float
    mean_loss: float
    tokens: int
    target_tokens: int
    padded_tokens: int
    seconds: float
    resumed_from_step: int
    step_offset: int = 0
    schedule_steps: int = 0
    first_lr: float = 0.0
    carried_optimizer: bool = False
    planned_steps: int = 0
    probe: list = field(default_factory=list)
    advanced_early: bool = False
    rows_truncated: int = 0  # rows longer than train.max_seq_len, cut from the left
    longest_row_tokens: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def _lora_model(model_dir: Path, lora: LoraSettings, init_adapter: Path | None, seed: int, hardware=None,
                quantize: str | None = None, gradient_checkpointing: bool = False):
    """The base (on ``hardware``, in its dtype or 4-bit) with a trainable LoRA adapter in fp32."""
    from peft import LoraConfig, PeftModel, get_peft_model

    base = load_model(model_dir, hardware, quantize=quantize)
    if quantize is not None:
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    if gradient_checkpointing:
        # non-reentrant: gradients reach the LoRA weights inside a layer whose input needs none
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if init_adapter is not None:
        model = PeftModel.from_pretrained(base, str(init_adapter), is_trainable=True)
    else:
        torch.manual_seed(seed)
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(base, config)
    for param in model.parameters():  # the trained weights and their AdamW moments stay fp32
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model


def make_portable(adapter_dir: Path, model_dir: Path) -> None:
    """The same bytes from the same run, and nothing tied to where the artifact root lies.

    PEFT writes the base model's absolute path into ``adapter_config.json`` and the adapter's
    README (so a moved or remounted root would carry a stale path), and ``target_modules`` from a
    set, whose order changes with Python's string hashing from process to process. The base is
    named by its folder in the artifact root (``models/<key>``: every box here passes the base
    model explicitly, none reads this field); the modules are sorted."""
    portable = "/".join(Path(model_dir).resolve().parts[-2:])
    config_path = adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    absolute = config.get("base_model_name_or_path")
    config["base_model_name_or_path"] = portable
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    readme = adapter_dir / "README.md"  # PEFT names the base by the loaded model's own path here
    if readme.is_file():
        text = readme.read_text()
        for path in sorted({str(absolute or ""), str(model_dir), str(Path(model_dir).resolve())} - {""}, key=len,
                           reverse=True):
            text = text.replace(path, portable)
        readme.write_text(text)


def _save_checkpoint(model, optimizer, scheduler, step: int, counters: dict, work_dir: Path, scaler=None) -> None:
    """Write the next checkpoint beside the current one, then swap them in by renames: at every
    instant ``checkpoint/`` or ``checkpoint.old/`` holds a whole checkpoint (``_load_checkpoint``)."""
    tmp, final, prev = work_dir / CHECKPOINT_NEXT, work_dir / CHECKPOINT, work_dir / CHECKPOINT_PREV
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp / "adapter")
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "numpy_rng": np.random.get_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "step": step,
            "counters": counters,
        },
        tmp / "state.pt",
    )
    shutil.rmtree(prev, ignore_errors=True)
    if final.exists():
        final.rename(prev)
    tmp.rename(final)
    shutil.rmtree(prev, ignore_errors=True)


def _load_checkpoint(model, optimizer, scheduler, work_dir: Path, scaler=None) -> tuple[int, dict]:
    """Restore the newest whole checkpoint; (0, {}) when there is none."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    ckpt = next((work_dir / name for name in (CHECKPOINT, CHECKPOINT_PREV)
                 if (work_dir / name / "state.pt").is_file()), None)
    if ckpt is None:
        return 0, {}
    set_peft_model_state_dict(model, load_file(str(ckpt / "adapter" / "adapter_model.safetensors")))
    state = torch.load(ckpt / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    np.random.set_state(state["numpy_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    log.info("resuming from %s at optimizer step %d", ckpt.name, state["step"])
    return int(state["step"]), state.get("counters", {})


def _load_optimizer_state(optimizer, init_adapter: str | Path | None) -> None:
    """The previous stage's AdamW moments and step counts (one optimizer across stages)."""
    path = Path(init_adapter).parent / OPTIMIZER_STATE if init_adapter else None
    if path is None or not path.is_file():
        raise ValueError(f"train.reset_optimizer_each_stage=false: the previous stage left no optimizer state "
                         f"({path or 'no previous stage'}); it was trained with a fresh optimizer per stage")
    state = torch.load(path, weights_only=False)
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:  # the rate comes from this stage's schedule, not the saved one
        group["lr"] = group["initial_lr"] = optimizer.defaults["lr"]
    log.info("optimizer state carried over from %s", path)


def _distill_term(logits, keep, batch_rows, distilled, row_ids, teacher: TeacherLogits, temperature: float):
    """The distillation loss on the batch's rows in the distilled form (their positions among the
    target logits, row by row), against their teacher entries: the mean over those positions."""
    counts = keep.sum(dim=1).tolist()
    select, entries = [], []
    for r, i in enumerate(batch_rows):
        select += [distilled[i]] * counts[r]
        if distilled[i]:
            entry = teacher.get(row_ids[i])
            if entry[0].shape[0] != counts[r]:
                raise ValueError(f"row {row_ids[i]}: the teacher logits cover {entry[0].shape[0]} answer tokens, "
                                 f"the shard's answer has {counts[r]}: they were made from other rows")
            entries.append(entry)
    mask = torch.tensor(select, dtype=torch.bool, device=logits.device)
    return distill_loss(logits[mask], *(torch.cat(parts).to(logits.device) for parts in zip(*entries)), temperature)


def _probe(model, probe: StageProbe) -> float:
    """The probe's score of the model as it is now, in eval mode and without gradients."""
    model.eval()
    try:
        with torch.no_grad():
            return float(probe.score(model))
    finally:
        model.train()


def _read_log(log_path: Path, upto: int) -> list[dict]:
    """The loss log's entries up to step ``upto``: later ones were written after the checkpoint we
    resume from, and a line torn by a kill mid-write is not an entry."""
    entries = []
    for line in log_path.read_text().splitlines() if log_path.is_file() else []:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry["step"] <= upto:
            entries.append(entry)
    return entries


def train_stage(
    model_dir: str | Path,
    shard_path: str | Path,
    work_dir: str | Path,
    lora: LoraSettings,
    cfg: TrainSettings,
    stage: int,
    init_adapter: str | Path | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    plan: StagePlan | None = None,
    probe: StageProbe | None = None,
    teacher: TeacherLogits | None = None,
    distill_form: tuple[float, int] | None = None,
    hardware=None,
    parallel=None,
) -> StageReport:
    """Train one stage; the adapter lands in ``work_dir/adapter``, the loss log in ``log.jsonl``.

    ``plan`` (``promptintern.curriculum.plan_stages``) sets the stage's optimizer steps, its place in
    the learning-rate schedule and whether the AdamW state comes from ``init_adapter``'s folder and
    is kept for the next stage; None: ``cfg.epochs_per_stage`` passes with a schedule of its own.
    ``probe`` (adaptive stage lengths): scored every ``probe.every`` steps; the stage ends before its
    planned steps once ``should_advance`` says the scores stopped improving.
    ``teacher`` (context distillation, ``cfg.distill``): rows in ``distill_form`` (the inference form,
    (tau, k)) also match the teacher's answer distribution (``promptintern.distill``).
    ``hardware``: a ``promptintern.device.Hardware`` (None: the CPU in fp32). ``parallel``: this
    process's place in a data-parallel group (``promptintern.launch.DataParallel``, set by the
    launcher; None: one process)."""
    from tqdm.auto import tqdm

    from promptintern.device import Hardware

    hardware = hardware or Hardware("cpu", "fp32")
    hardware.configure()
    main = parallel is None or parallel.rank == 0
    # with gradient checkpointing each layer runs again in the backward pass, and a prefix cache
    # filled in the forward would be filled twice: the rows then run whole
    share_prefix = cfg.share_prompt_prefix and not cfg.gradient_checkpointing
    set_torch_threads()
    model_dir, work_dir = Path(model_dir), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    seed = cfg.seed + 1000 * stage
    tokenizer = load_tokenizer(model_dir)
    table = read_shard(Path(shard_path))
    row_ids = table.column("id").to_pylist()
    forms = list(zip(table.column("tau").to_pylist(), table.column("k").to_pylist()))
    distilled = [teacher is not None and distill_form is not None and abs(tau - distill_form[0]) < 1e-6
                 and k == distill_form[1] and teacher.get(row_id) is not None
                 for row_id, (tau, k) in zip(row_ids, forms)]
    if any(distilled) and abs(teacher.temperature - cfg.distill.temperature) > 1e-6:
        raise ValueError(f"the teacher logits were made at T={teacher.temperature}, train.distill.temperature="
                         f"{cfg.distill.temperature}")
    tokens = [row_tokens(tokenizer, p, t)
              for p, t in zip(table.column("prompt").to_pylist(), table.column("target").to_pylist())]
    if not tokens:
        raise ValueError(f"{shard_path}: the shard has no rows")
    encoded = [fit_row(prompt_ids, target_ids, cfg.max_seq_len) for prompt_ids, target_ids in tokens]
    # a row longer than the limit lost prompt tokens from the left (fit_row): count and say so
    full = [len(prompt_ids) + len(target_ids) for prompt_ids, target_ids in tokens]
    truncated = sum(n > cfg.max_seq_len for n in full)
    if truncated:
        log.warning("stage %d: %d of %d rows are longer than train.max_seq_len=%d (the longest %d tokens) and "
                    "lose prompt tokens from the left (the template's head first); raise train.max_seq_len, lower "
                    "schedule.k0 or compress the template to keep them whole", stage, truncated, len(encoded),
                    cfg.max_seq_len, max(full))
    if plan is None:
        steps = steps_for_epochs(len(encoded), cfg.batch_size, cfg.grad_accum, cfg.epochs_per_stage)
        plan = StagePlan(stage=stage, steps=steps, schedule_steps=steps)
    batches = batches_for_steps([len(ids) for ids, _ in encoded], cfg.batch_size, cfg.grad_accum, plan.steps, seed)
    total_steps = plan.steps
    check_memory(model_dir, lora, cfg.batch_size, encoded, stage, share_prefix, hardware, cfg.gradient_checkpointing,
                 cfg.quantize_base)

    model = _lora_model(model_dir, lora, Path(init_adapter) if init_adapter else None, seed, hardware,
                        cfg.quantize_base, cfg.gradient_checkpointing)
    model.train()
    autocast = torch.autocast(hardware.kind, dtype=hardware.torch_dtype, enabled=hardware.dtype != "fp32")
    scaler = torch.amp.GradScaler(hardware.kind) if hardware.needs_loss_scaling else None
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if plan.carry_optimizer:
        _load_optimizer_state(optimizer, init_adapter)
    warmup = warmup_steps(cfg, plan.schedule_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(
        min(plan.step_offset + i, plan.schedule_steps - 1), plan.schedule_steps, warmup, cfg.lr_schedule,
        cfg.decay_ratio))
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    start_step, counters = _load_checkpoint(model, optimizer, scheduler, work_dir, scaler)

    log_path = work_dir / "log.jsonl"
    kept = _read_log(log_path, start_step) if start_step else []
    if main:
        log_path.write_text("".join(json.dumps(e) + "\n" for e in kept))
    losses: list[float] = [e["loss"] for e in kept]
    lrs: list[float] = [e["lr"] for e in kept]
    probed: list[dict] = [p for p in counters.get("probe", []) if p["step"] <= start_step]
    advanced = False
    # whole-stage totals: a resumed run carries on the counts (and seconds) of the interrupted one
    tokens, target_tokens, padded = (counters.get(k, 0) for k in ("tokens", "target_tokens", "padded"))
    started = time.time() - counters.get("seconds", 0.0)
    bar = tqdm(total=total_steps, initial=start_step, desc=f"stage {stage}", unit="step", leave=False,
               disable=not main)

    def micro_batch_loss(batch_rows: list[int]) -> torch.Tensor:
        """The loss one process back-propagates for its rows of a micro-batch: alone, the mean over the
        batch's target tokens (+ the distillation term); in a data-parallel group, its slice's share of
        those means, so that the group's summed gradients are one process's."""
        mine = batch_rows if parallel is None else parallel.rows(batch_rows)
        if not mine:
            return None
        batch = {k: v.to(hardware.device) for k, v in
                 collate([encoded[i] for i in mine], tokenizer.pad_token_id).items()}
        with autocast:
            logits, targets, keep = target_logits(model, batch, share_prefix=share_prefix)
        if parallel is None:
            loss = torch.nn.functional.cross_entropy(logits.float(), targets)
        else:  # token sums over the slice, divided by the whole micro-batch's counts
            loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum") / answer_tokens(batch_rows)
        if any(distilled[i] for i in mine):
            term = _distill_term(logits, keep, mine, distilled, row_ids, teacher, cfg.distill.temperature)
            if parallel is not None:
                term = term * answer_tokens(mine, distilled_only=True) / answer_tokens(batch_rows, distilled_only=True)
            loss = loss + cfg.distill.weight * term
        return loss

    def answer_tokens(batch_rows, distilled_only: bool = False) -> int:
        return sum(answer_lens[i] for i in batch_rows if distilled[i] or not distilled_only)

    answer_lens = [sum(t != IGNORE_INDEX for t in labels[1:]) for _, labels in encoded]
    for step in range(start_step, total_steps):
        micro = batches[step * cfg.grad_accum : (step + 1) * cfg.grad_accum]
        step_loss = 0.0
        for batch_rows in micro:
            loss = micro_batch_loss(batch_rows)
            if loss is not None:
                scaled = loss / len(micro)
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
                step_loss += loss.item() / len(micro)
            # what the whole micro-batch ran, as one process pads it (every process counts it alike)
            tokens += sum(len(encoded[i][0]) for i in batch_rows)
            target_tokens += answer_tokens(batch_rows)
            padded += len(batch_rows) * max(len(encoded[i][0]) for i in batch_rows)
        if parallel is not None:
            step_loss = parallel.sum_gradients(params, step_loss)
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        lr = scheduler.get_last_lr()[0]  # the rate this update runs at
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
        lrs.append(lr)
        if main:
            with log_path.open("a") as fh:
                fh.write(json.dumps({"step": step + 1, "loss": step_loss, "lr": lr}) + "\n")
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.3f}")
        if on_step is not None:
            on_step(step + 1, total_steps, step_loss)
        if probe is not None and (step + 1) >= probe.min_steps and (step + 1) % probe.every == 0 \
                and step + 1 < total_steps:
            probed.append({"step": step + 1, "value": _probe(model, probe)})
            log.info("stage %d step %d: probe %.4f", stage, step + 1, probed[-1]["value"])
            advanced = should_advance([p["value"] for p in probed], probe.patience, probe.min_delta)
        if advanced:
            break
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total_steps:
            counters = {"tokens": tokens, "target_tokens": target_tokens, "padded": padded,
                        "seconds": time.time() - started, "probe": probed}
            if main:
                _save_checkpoint(model, optimizer, scheduler, step + 1, counters, work_dir, scaler)
            if parallel is not None:
                parallel.barrier()
    bar.close()
    if not main:  # the other processes hold the same adapter: one writes it
        return None
    model.save_pretrained(work_dir / "adapter")
    make_portable(work_dir / "adapter", model_dir)
    if plan.keep_optimizer:
        torch.save(optimizer.state_dict(), work_dir / OPTIMIZER_STATE)
    for name in (CHECKPOINT, CHECKPOINT_NEXT, CHECKPOINT_PREV):  # none of it belongs to the artifact
        shutil.rmtree(work_dir / name, ignore_errors=True)
    report = StageReport(
        stage=stage,
        rows=len(encoded),
        optimizer_steps=len(losses),
        micro_batches=len(losses) * cfg.grad_accum,
        first_loss=losses[0],
        final_loss=losses[-1],
        mean_loss=float(np.mean(losses)),
        tokens=tokens,
        target_tokens=target_tokens,
        padded_tokens=padded,
        seconds=round(time.time() - started, 3),
        resumed_from_step=start_step,
        step_offset=plan.step_offset,
        schedule_steps=plan.schedule_steps,
        first_lr=lrs[0],
        carried_optimizer=plan.carry_optimizer,
        planned_steps=total_steps,
        probe=probed,
        advanced_early=advanced,
        rows_truncated=truncated,
        longest_row_tokens=max(full),
    )
    (work_dir / "stats.json").write_text(
        json.dumps({**asdict(report), "tokens_per_second": report.tokens_per_second}, indent=2)
    )
    return report
