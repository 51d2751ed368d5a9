"""The DAG's boxes as plain functions: each reads input folders, writes one output folder.

These are what the Prefect tasks in ``tasks/`` wrap (one call each) and what a test or a notebook
can call directly without Prefect. Every function takes folders and small typed values and
writes only inside ``out``; the artifact store makes ``out`` atomic and content-addressed.

    dataset ─┬─ compress (per tau) ─┐
             └─ bank ───────────────┴─ shard (per stage) ─ train (stage 1..T) ─ merge ─ benchmark
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from promptintern.artifacts import resource_errors
from promptintern.config import CompressionConfig, EvalSettings, LoraSettings, RetrievalConfig, TrainSettings
from promptintern.datasets import UNLABELED, DataError, Example, Task, get_task
from promptintern.prompts import Template, render
from promptintern.schedule import StageSpec

# ---------------------------------------------------------------------------------------------
# dataset
# ---------------------------------------------------------------------------------------------


def write_examples(path: Path, rows: list[Example]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(row.model_dump_json() + "\n")


def read_examples(path: Path) -> list[Example]:
    with path.open(encoding="utf-8") as fh:
        return [Example.model_validate_json(line) for line in fh if line.strip()]


def prepare_dataset(task_name: str, data_dir: str, train_subset: int | None, test_split: str | None,
                    test_subset: int | None, seed: int, out: Path, probe_split: str | None = None,
                    probe_rows: int | None = None) -> dict:
    """Load the splits, take the subsets, and freeze them (plus the template) into ``out``.

    The training subset is the first N rows of a seeded shuffle; the test subset is the first N
    rows in the split's own order, so every run and variant is scored on the same rows. With
    ``probe_split``, its *last* ``probe_rows`` rows go to ``dev.jsonl``: what adaptive stage
    lengths probe (``train.adaptive``); never rows the benchmark scores. ``test_split`` None: the
    training side alone, no test rows (what the training boxes read, so that scoring other rows
    trains nothing again).
    """
    task = get_task(task_name)
    scorable = [s for s in task.splits if s != UNLABELED]  # unanswered queries have nothing to score against
    if test_split is not None and test_split not in scorable:
        why = "is its request log (no answers to score against)" if test_split == UNLABELED else "has no such split"
        raise DataError(f"eval.test_split={test_split!r}: dataset {task_name!r} {why}; allowed: {scorable}")
    train = task.load(data_dir, "train")
    test = task.load(data_dir, test_split) if test_split is not None else None
    for name, size, split_name, split in (("train_subset", train_subset, "train", train),
                                          ("eval.test_subset", test_subset, test_split, test)):
        if split is not None and size is not None and size > len(split):
            raise DataError(f"{name}={size} is larger than the {split_name!r} split of {task_name!r} "
                            f"({len(split)} rows): set {name} to at most {len(split)}, or to null for all rows")
    if train_subset is not None:
        train = [train[i] for i in sorted(training_order(len(train), seed)[:train_subset])]
    dev = _probe_rows(task, data_dir, probe_split, probe_rows, test_split, test_subset) if probe_split else None
    if test is not None and test_subset is not None:
        test = test[:test_subset]
    info = {"task": task_name, "train_rows": len(train)}
    if test is not None:  # (none on the training side alone)
        info |= {"test_rows": len(test), "test_split": test_split}
    info["seed"] = seed
    if dev is not None:
        info |= {"probe_split": probe_split, "probe_rows": len(dev)}
    pool = task.load_pool(Path(data_dir)) if task.load_pool is not None else None
    if pool is not None:
        if not pool:
            raise DataError(f"{task.source}: shots.pool has no rows")
        info |= {"pool_rows": len(pool), "shot_select": task.shot_select}
    with resource_errors(f"writing the {task_name} dataset rows", out):
        write_examples(out / "train.jsonl", train)
        if test is not None:
            write_examples(out / "test.jsonl", test)
        if dev is not None:
            write_examples(out / "dev.jsonl", dev)
        if pool is not None:
            write_examples(out / "pool.jsonl", pool)
        (out / "template.json").write_text(task.template.model_dump_json(indent=2))
        (out / "info.json").write_text(json.dumps(info, indent=2))
    return info


def training_order(rows: int, seed: int) -> list[int]:
    """The training split's seeded shuffle: a run's ``train_subset`` is its first N indices (kept in
    the split's order), the queries ``unlabeled_rows`` hands the teacher the N after them."""
    order = list(range(rows))
    random.Random(seed).shuffle(order)
    return order


def unlabeled_source(task_name: str) -> str:
    """Where a run's unlabeled queries come from: the task's ``unlabeled`` split (a request log)
    when it has one, else the training rows that are not the run's labeled rows."""
    return UNLABELED if UNLABELED in get_task(task_name).splits else "train"


def unlabeled_rows(task_name: str, data_dir: str, train_subset: int | None, seed: int, n: int,
                   references: bool = False) -> list[Example]:
    """``n`` queries nobody has answered, their references blanked (``references``: kept where the
    data has them, for a diagnostic nothing trains on): the first ``n`` of the task's ``unlabeled``
    split in a seeded shuffle, or, without one, the ``n`` training rows that follow the run's
    ``train_subset`` rows in the seeded shuffle (never one of them; ``None``: every row is labeled)."""
    task = get_task(task_name)
    key = f"train.distill.unlabeled_queries={n}"
    if unlabeled_source(task_name) == UNLABELED:
        pool = task.load(data_dir, UNLABELED)
        if n > len(pool):
            raise DataError(f"{key}: the {UNLABELED!r} split of {task_name!r} has {len(pool)} queries")
        rows = [pool[i] for i in training_order(len(pool), seed)[:n]]
    else:
        train = task.load(data_dir, "train")
        labeled = len(train) if train_subset is None else train_subset
        if n > len(train) - labeled:
            raise DataError(f"{key}: the 'train' split of {task_name!r} has {len(train)} rows and "
                            f"train_subset={train_subset} of them are labeled, so at most {len(train) - labeled} "
                            f"are left (give the task a request log: data.{UNLABELED} in its task file)")
        rows = [train[i] for i in training_order(len(train), seed)[labeled:labeled + n]]
    return rows if references else blanked(rows)


def blanked(rows: list[Example]) -> list[Example]:
    """The rows with their references set aside: what the teacher is asked."""
    return [r.model_copy(update={"target": ""}) for r in rows]


def train_rows(dataset_dir: Path) -> int:
    """How many training rows the frozen dataset holds (what the step plan is counted on)."""
    return int(json.loads((dataset_dir / "info.json").read_text())["train_rows"])


def _probe_rows(task: Task, data_dir: str, split: str, rows: int | None, test_split: str | None,
                test_subset: int | None) -> list[Example]:
    """The last ``rows`` rows of ``split``, checked not to meet the rows the benchmark scores."""
    if split not in task.splits:
        raise DataError(f"train.adaptive.dev_split={split!r}: dataset {task.name!r} has no such split; "
                        f"allowed: {list(task.splits)}")
    held = task.load(data_dir, split)
    n = min(rows or len(held), len(held))
    if split == test_split and (test_subset is None or test_subset > len(held) - n):
        raise DataError(f"train.adaptive.dev_split={split!r} is the benchmark's split too: its last {n} rows "
                        f"(the probe) meet the first {test_subset or len(held)} (the benchmark) of {len(held)}; "
                        f"lower train.adaptive.dev_rows or eval.test_subset")
    return held[len(held) - n:]


def stage_steps(adapter_dir: Path) -> int:
    """Optimizer steps a trained stage took (fewer than planned when adaptive lengths ended it)."""
    return int(json.loads((adapter_dir / "stats.json").read_text())["optimizer_steps"])


def read_shot_pool(dataset_dir: Path) -> list[Example]:
    """Where shots come from: the task's fixed pool when it has one, else the training rows."""
    pool = dataset_dir / "pool.jsonl"
    return read_examples(pool if pool.is_file() else dataset_dir / "train.jsonl")


def load_template(dataset_dir: Path) -> Template:
    return Template.model_validate_json((dataset_dir / "template.json").read_text())


# ---------------------------------------------------------------------------------------------
# compress
# ---------------------------------------------------------------------------------------------


def compress(dataset_dir: Path, tau: float, cfg: CompressionConfig, compressor_dir: Path, out: Path,
             hardware=None) -> dict:
    """The task template compressed to rate ``tau``: ``template.txt`` + ``stats.json``.

    ``compressor_dir`` is the prepared ``cfg.model`` (the run's model when unset): the scoring LM, or
    LLMLingua-2's classifier; its tokenizer counts the tokens. stats.json records how the template
    was made, the API endpoint and model included, never the API key (only its variable's name)."""
    from promptintern.compress import compress_template

    task = get_task(json.loads((dataset_dir / "info.json").read_text())["task"])
    template = load_template(dataset_dir)

    def run(part: Template, method: str):
        return compress_template(part, tau, method=method, model_dir=compressor_dir, question=task.description,
                                 endpoint=cfg.endpoint, api_model=cfg.api_model,
                                 api_key_env=cfg.api_key_env, api_timeout_s=cfg.api_timeout_s, hardware=hardware)

    with resource_errors(f"compressing the template to tau={tau} with {cfg.method}", out,
                         memory_hint="free memory, or set compression.model to a smaller scoring model"):
        if not cfg.by_kind:
            result = run(template, cfg.method)
            text, before, after = result.text, result.tokens_before, result.tokens_after
            by_section = None
        else:  # each section alone, with its kind's compressor
            parts = [(s, run(Template(sections=(s,)), cfg.by_kind.get(s.kind, cfg.method))) for s in template.sections]
            text = "\n\n".join(r.text.strip() for _, r in parts if r.text.strip())
            before = run(template, "none").tokens_before
            after = run(Template.from_text(text), "none").tokens_before if text else 0
            by_section = [{"kind": s.kind, "method": r.method, "tokens_before": r.tokens_before,
                           "tokens_after": r.tokens_after} for s, r in parts]
        (out / "template.txt").write_text(text, encoding="utf-8")
    stats = {"tau": tau, "method": cfg.method, "rate_requested": tau,
             "rate_achieved": after / before if before else 1.0, "tokens_before": before,
             "tokens_after": after, "compressor_model": str(compressor_dir.name)}
    if by_section is not None:
        stats |= {"by_kind": dict(cfg.by_kind), "sections": by_section}
    if cfg.method == "api":
        stats |= {"endpoint": cfg.endpoint, "api_model": cfg.api_model, "api_key_env": cfg.api_key_env}
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


def read_template_text(template_dir: Path | None) -> str:
    return "" if template_dir is None else (template_dir / "template.txt").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# retrieval bank
# ---------------------------------------------------------------------------------------------


def bank(dataset_dir: Path, k: int, cfg: RetrievalConfig, seed: int, out: Path, scored_only: bool = False) -> dict:
    """Top-k training neighbors of every training row (self excluded), every test row and every probe
    row (a dataset folder of the training side alone has no test rows: none for them).
    ``scored_only``: the test rows' alone, the benchmarks' bank beside a training side that has its
    own (the training rows' neighbors, quadratic in the rows, are not computed twice).

    A task with a fixed shot pool (``pool.jsonl``) draws from the pool instead: its first k rows
    for every row (``shot_select`` fixed), or the k most similar pool rows (retrieve)."""
    from promptintern.retrieve import build_bank, retrieve_for

    train = read_examples(dataset_dir / "train.jsonl")
    test = read_examples(dataset_dir / "test.jsonl") if (dataset_dir / "test.jsonl").is_file() else None
    if scored_only and test is None:
        raise ValueError(f"{dataset_dir}: no test rows to retrieve for (scored_only)")
    if (dataset_dir / "pool.jsonl").is_file():
        return _pool_bank(dataset_dir, train, test, k, cfg, out, scored_only)
    k = min(k, len(train) - 1)
    queries = [r.query for r in train]
    with resource_errors(f"building the {cfg.scorer} retrieval bank over {len(train)} rows", out,
                         memory_hint="use fewer rows (train_subset), retrieval.bank_fraction < 1 "
                                     "or retrieval.scorer=bm25"):
        if not scored_only:
            train_bank = build_bank(queries, k, scorer=cfg.scorer, bank_fraction=cfg.bank_fraction, seed=seed)
            np.save(out / "train_neighbors.npy", train_bank.neighbors)
        if test is not None:
            np.save(out / "test_neighbors.npy", retrieve_for([r.query for r in test], queries, k, scorer=cfg.scorer))
        if (dataset_dir / "dev.jsonl").is_file():  # the probe rows of adaptive stage lengths
            dev = read_examples(dataset_dir / "dev.jsonl")
            np.save(out / "dev_neighbors.npy", retrieve_for([r.query for r in dev], queries, k, scorer=cfg.scorer))
    # (the test rows retrieve from every training row; bank_fraction limits the training rows' pool)
    stats = {"k": k, "scorer": cfg.scorer, "bank_fraction": cfg.bank_fraction,
             "pool_size": len(train) if scored_only else train_bank.pool_size, "train_rows": len(train)}
    if test is not None:
        stats["test_rows"] = len(test)
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


def _pool_bank(dataset_dir: Path, train: list[Example], test: list[Example] | None, k: int, cfg: RetrievalConfig,
               out: Path, scored_only: bool = False) -> dict:
    from promptintern.retrieve import retrieve_for

    pool = read_examples(dataset_dir / "pool.jsonl")
    select = json.loads((dataset_dir / "info.json").read_text()).get("shot_select", "fixed")
    k = min(k, len(pool))
    splits = ([] if scored_only else [("train", train)]) + ([("test", test)] if test is not None else [])
    if (dataset_dir / "dev.jsonl").is_file():
        splits.append(("dev", read_examples(dataset_dir / "dev.jsonl")))
    for split, rows in splits:
        if select == "fixed":
            neighbors = np.tile(np.arange(k, dtype=np.int64), (len(rows), 1))
        else:
            neighbors = retrieve_for([r.query for r in rows], [p.query for p in pool], k, scorer=cfg.scorer)
        np.save(out / f"{split}_neighbors.npy", neighbors)
    stats = {"k": k, "scorer": cfg.scorer if select == "retrieve" else None, "shots_from": f"pool ({select})",
             "pool_size": len(pool), "train_rows": len(train)}
    if test is not None:
        stats["test_rows"] = len(test)
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


def load_neighbors(bank_dir: Path | None, split: str) -> np.ndarray | None:
    return None if bank_dir is None else np.load(bank_dir / f"{split}_neighbors.npy")


# ---------------------------------------------------------------------------------------------
# shards
# ---------------------------------------------------------------------------------------------


def check_template_fits(template_text: str, tokenizer, model_dir: Path, what: str) -> int:
    """The template's token count; a ValueError when it alone fills the model's context.

    Rows longer than ``train.max_seq_len`` lose prompt tokens from the left (the query survives,
    see ``promptintern.train.encode_row``), but a template that is longer than the whole context
    cannot appear in any prompt: the run would train and infer on a fragment of it while
    reporting it whole. That is an error, raised before any training."""
    from promptintern.models import model_context_length

    n = len(tokenizer(template_text, add_special_tokens=False)["input_ids"]) if template_text else 0
    context = model_context_length(model_dir)
    if n >= context:
        raise ValueError(
            f"{what}: the template is {n} tokens, but the model {model_dir.name} has a context of "
            f"{context} tokens (max_position_embeddings in its config.json), so no prompt that carries "
            f"it fits. Compress it (schedule.tau0 below 1), shorten the task template, or use a model "
            f"with a longer context (--set model=...)")
    return n


def check_prompts_fit(prompts: list[str], model_dir: Path, max_new_tokens: int, what: str) -> None:
    """Every prompt plus ``eval.max_new_tokens`` fits the model's context, or a ValueError with the
    numbers and what to change (transformers would only warn and generate from positions the model
    never saw)."""
    from promptintern.models import load_tokenizer, model_context_length

    tokenizer = load_tokenizer(model_dir)
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    context = model_context_length(model_dir)
    over = [n for n in lengths if n + max_new_tokens > context]
    if over:
        raise ValueError(
            f"{what}: {len(over)} of {len(prompts)} prompts do not fit the model's context: the longest is "
            f"{max(lengths)} tokens + eval.max_new_tokens={max_new_tokens} > {context} (max_position_embeddings of "
            f"{model_dir.name}). Lower schedule.k0 (the shots in the full prompt), compress the template "
            f"(schedule.tau0), lower eval.max_new_tokens, or use a model with a longer context (--set model=...)")


def shard(dataset_dir: Path, template_dir: Path | None, bank_dir: Path | None, spec: StageSpec,
          model_dir: Path, out: Path, chat: str = "off", replay: float = 0.0, final_spec: StageSpec | None = None,
          final_template_dir: Path | None = None, seed: int = 0, split: str = "train") -> dict:
    """One stage's shard (``shard.parquet``) plus the same rows as OpenAI chat fine-tuning JSONL
    (``openai_chat.jsonl``: system = template, user = shots + query), the paper's path to
    closed models; the JSONL is validated against the documented format before it is kept.
    ``chat`` (auto | on | off): prompts through the model's chat template (auto: when it has one).
    ``replay`` > 0: that share of the rows (drawn from ``seed`` and the stage) is rendered in
    ``final_spec``'s form with ``final_template_dir``'s template (``promptintern.shards.Replay``).
    ``split="dev"``: the dataset's probe rows in this stage's form, what adaptive stage lengths
    score the stage before it on (no export)."""
    from promptintern.export import pairs_to_openai_jsonl, validate_openai_chat_jsonl
    from promptintern.models import load_tokenizer
    from promptintern.prompts import use_chat
    from promptintern.shards import Replay, render_rows, replay_rows, write_shard

    task = get_task(json.loads((dataset_dir / "info.json").read_text())["task"])
    train = read_examples(dataset_dir / f"{split}.jsonl")
    template_stats = json.loads((template_dir / "stats.json").read_text()) if template_dir else {}
    template_text = read_template_text(template_dir)
    tokenizer = load_tokenizer(model_dir)
    check_template_fits(template_text, tokenizer, model_dir, f"stage {spec.stage} (tau={spec.tau})")
    as_chat = use_chat(chat, tokenizer, f"stage {spec.stage} of {task.name}")
    pool, neighbors = read_shot_pool(dataset_dir), load_neighbors(bank_dir, split)
    replayed = None
    if replay > 0 and final_spec is not None and final_spec.stage != spec.stage:
        replayed = Replay(replay_rows(len(train), replay, spec.stage, seed), final_spec,
                          read_template_text(final_template_dir))
    with resource_errors(f"writing the stage {spec.stage} shard", out):
        stats = write_shard(
            out / "shard.parquet", train, pool, neighbors, spec, template_text, task.format, tokenizer,
            extra_metadata={"template_rate_achieved": template_stats.get("rate_achieved", 0.0 if spec.tau == 0 else 1.0),
                            "tokenizer": model_dir.name},
            chat=as_chat, replay=replayed,
        )
        if split != "train":
            return stats
        # the paper's closed-model path takes messages, made here from the plain-text rendering
        plain = [p for p, _ in render_rows(train, pool, neighbors, spec.k, template_text, task.format)]
        pairs_to_openai_jsonl(zip(plain, [task.format.render_target(r.target) for r in train]),
                              out / "openai_chat.jsonl", template_text, fmt=task.format, source=str(out / "shard.parquet"))
    errors = validate_openai_chat_jsonl(out / "openai_chat.jsonl")
    if errors:
        raise ValueError("openai_chat.jsonl breaks the chat fine-tuning format: " + "; ".join(errors[:5]))
    return stats


# ---------------------------------------------------------------------------------------------
# train, merge
# ---------------------------------------------------------------------------------------------


def check_rows_fit_context(model_dir: Path, shard_dir: Path, cfg: TrainSettings) -> None:
    """A ValueError when ``train.max_seq_len`` lets rows through that are longer than the model's
    context (positions it was never trained on; models with learned positions crash on them)."""
    import pyarrow.parquet as pq

    from promptintern.models import model_context_length

    context = model_context_length(model_dir)
    if cfg.max_seq_len <= context:
        return
    lengths = pq.read_table(shard_dir / "shard.parquet", columns=["prompt_tokens", "target_tokens"])
    longest = max((p + t + 1 for p, t in zip(lengths.column("prompt_tokens").to_pylist(),
                                             lengths.column("target_tokens").to_pylist())), default=0)
    if longest > context:
        raise ValueError(
            f"train.max_seq_len={cfg.max_seq_len} is above the context of the model {model_dir.name} "
            f"(max_position_embeddings={context}) and this shard has rows of {longest} tokens: "
            f"set train.max_seq_len to at most {context}")


def train(model_dir: Path, shard_dir: Path, init_adapter_dir: Path | None, lora: LoraSettings,
          cfg: TrainSettings, stage: int, out: Path, on_step=None, plan=None, probe_shard_dir: Path | None = None,
          dataset_dir: Path | None = None, probe_generation: tuple[int, int] = (64, 8),
          teacher_dir: Path | None = None, distill_form: tuple[float, int] | None = None, hardware=None) -> dict:
    """One stage of LoRA training (on ``hardware``, a ``promptintern.device.Hardware``; None: the CPU); ``plan`` (a ``promptintern.curriculum.StagePlan``) sets its steps,
    its place in the learning-rate schedule and whether the optimizer state carries on. With
    ``cfg.adaptive`` and a ``probe_shard_dir`` (dev rows in the next stage's form) the stage ends
    when their score stops improving (``promptintern.probe``; generation at ``probe_generation``
    = (max_new_tokens, batch size)). With ``cfg.distill`` and a ``teacher_dir`` (the teacher-logits
    box), rows in ``distill_form`` also learn the teacher's answer distribution."""
    from dataclasses import asdict

    from promptintern.distill import TeacherLogits

    from promptintern.train import train_stage

    probe = None
    if cfg.adaptive is not None and probe_shard_dir is not None:
        from promptintern.probe import stage_probe

        probe = stage_probe(model_dir, probe_shard_dir, dataset_dir, cfg.adaptive, cfg.max_seq_len, *probe_generation)
    if cfg.processes > 1:  # the same signature, the stage spread over torchrun's processes
        from promptintern.launch import train_stage_parallel as run_stage
    else:
        run_stage = train_stage

    check_rows_fit_context(model_dir, shard_dir, cfg)
    with resource_errors(f"LoRA training of stage {stage} at batch_size={cfg.batch_size}, "
                         f"max_seq_len={cfg.max_seq_len}", out,
                         memory_hint="lower train.batch_size (raise train.grad_accum to keep the "
                                     "effective batch) or train.max_seq_len"):
        report = run_stage(model_dir, shard_dir / "shard.parquet", out, lora, cfg, stage,
                             init_adapter=(init_adapter_dir / "adapter") if init_adapter_dir else None,
                             on_step=on_step, plan=plan, probe=probe,
                             teacher=TeacherLogits(teacher_dir) if cfg.distill and teacher_dir else None,
                             distill_form=tuple(distill_form) if distill_form else None, hardware=hardware)
    return {**asdict(report), "tokens_per_second": report.tokens_per_second}


def teacher_logits(model_dir: Path, adapter_dir: Path | None, shard_dir: Path, top_k: int, max_seq_len: int,
                   temperature: float, out: Path, hardware=None) -> dict:
    """The teacher's top-k answer logits for every row of ``shard_dir`` (the full-prompt form), for
    context distillation (``promptintern.teacher``); ``adapter_dir``: a trained stage's folder."""
    from promptintern.teacher import write_teacher_logits

    with resource_errors("computing the teacher's answer logits", out,
                         memory_hint="lower train.distill.top_k or train.max_seq_len"):
        return write_teacher_logits(model_dir, (adapter_dir / "adapter") if adapter_dir else None,
                                    shard_dir / "shard.parquet", out, top_k, max_seq_len, temperature, hardware)


def _copy_dataset_files(src: Path, dst: Path, names: tuple[str, ...]) -> None:
    """Those of a frozen dataset's files that ``src`` has (pool, dev rows are optional), into ``dst``."""
    import shutil

    for name in names:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)


def teacher_answers(model_dir: Path, dataset_dir: Path, data_dir: str, template_dir: Path | None, k: int,
                    retrieval: RetrievalConfig, queries: int, out: Path, max_new_tokens: int = 64,
                    batch_size: int = 8, precision: str | None = None, prefix_cache: bool = True,
                    chat: str = "off", hardware=None) -> dict:
    """Sequence-level distillation's data (Kim & Rush 2016; Snell et al. 2022 distil on such
    inputs): the teacher ``model_dir`` answers ``queries`` training-split queries that are not the
    run's labeled rows (``unlabeled_rows``; their references reach neither the teacher nor the
    student, only the diagnostic in ``stats.json``), each in the full prompt (the template of
    ``template_dir``, k shots retrieved from the labeled rows as a test row's are), greedily, as the
    benchmark generates (``max_new_tokens`` ... ``prefix_cache``: the run's ``eval`` settings of
    those names; ``precision`` None: the hardware's dtype). ``out`` is a dataset folder: the labeled
    rows, then the kept answers as rows (``meta.answered_by: teacher``); an answer that ran to
    ``max_new_tokens`` (a loop) or is empty after the task's postprocessing is dropped.
    ``answers.jsonl`` keeps every answer with why it was dropped; the prompts are rebuildable from
    ``queries/`` (the folder they were rendered from)."""
    from collections import Counter

    from promptintern.cpu import set_torch_threads
    from promptintern.device import Hardware
    from promptintern.generate import generate_with, load_for_generation
    from promptintern.models import load_tokenizer

    hardware = hardware or Hardware("cpu", "fp32")
    info = json.loads((dataset_dir / "info.json").read_text())
    labeled = read_examples(dataset_dir / "train.jsonl")
    held = unlabeled_rows(info["task"], data_dir, info["train_rows"], info["seed"], queries, references=True)
    asked = blanked(held)
    # the queries as a dataset whose test rows they are: the bank retrieves their shots from the
    # labeled rows and ``benchmark_prompts`` renders them exactly as it renders a test row
    qdir = out / "queries"
    qdir.mkdir()
    with resource_errors("writing the teacher's queries", out):
        _copy_dataset_files(dataset_dir, qdir, ("train.jsonl", "pool.jsonl", "template.json", "info.json"))
        write_examples(qdir / "test.jsonl", asked)
    if k:
        (qdir / "bank").mkdir()
        bank(qdir, k, retrieval, info["seed"], qdir / "bank")
    task, _, _, prompts, _ = benchmark_prompts(model_dir, qdir, template_dir, qdir / "bank" if k else None, k,
                                               "teacher answers", chat)
    check_prompts_fit(prompts, model_dir, max_new_tokens, "teacher answers")
    with resource_errors(f"the teacher's answers at eval.batch_size={batch_size}", out,
                         memory_hint="lower eval.batch_size or eval.max_new_tokens"):
        set_torch_threads()
        model = load_for_generation(model_dir, hardware, precision or hardware.dtype)
        gens = generate_with(model, load_tokenizer(model_dir), prompts, max_new_tokens=max_new_tokens,
                             batch_size=batch_size, stop=task.stop, prefix_cache=prefix_cache)
        del model
    kept, records = [], []
    for row, raw, n_out in zip(asked, gens.texts, gens.output_tokens):
        answer = task.postprocess(raw)
        dropped = ("ran to eval.max_new_tokens" if n_out >= max_new_tokens
                   else "empty after postprocessing" if not answer.strip() else None)
        records.append({"id": row.id, "query": row.query, "completion": raw, "answer": answer,
                        "output_tokens": n_out, "dropped": dropped})
        if dropped is None:
            kept.append(row.model_copy(update={"target": answer, "meta": {**row.meta, "answered_by": "teacher"}}))
    drops = dict(Counter(r["dropped"] for r in records if r["dropped"]))
    if asked and not kept:  # the student would train on the labeled rows alone, under another name
        raise ValueError(f"teacher answers: none of the teacher's {len(asked)} answers is usable ({drops}; the first: "
                         f"{records[0]['completion'][:80]!r}): raise eval.max_new_tokens if its answers are long, "
                         f"else check the teacher with the full prompt (eval.baseline_full_prompt)")
    stats = {"queries": len(asked), "kept": len(kept), "dropped": drops, "labeled_rows": len(labeled),
             "teacher": model_dir.name, "k": k, "decoding": "greedy", "max_new_tokens": max_new_tokens,
             "input_tokens_per_query": float(np.mean(gens.input_tokens)) if asked else 0.0,
             "generation_seconds": gens.seconds}
    stats["queries_from"] = unlabeled_source(info["task"])
    if task.metric != "pass@1" and all(r.target for r in held):  # (an execution metric would run them)
        # how right the kept answers are, against the references the student never sees: a
        # diagnostic our generated request logs allow (a user's own unlabeled queries have none)
        references = {r.id: r for r in held}
        scores = task.score([r.target for r in kept], [references[r.id] for r in kept], {})
        stats["kept_answers_vs_set_aside_references"] = {key: value for key, value in scores.items()
                                                         if key != "per_task"}
    with resource_errors("writing the teacher-answered dataset", out):
        _copy_dataset_files(dataset_dir, out, ("test.jsonl", "dev.jsonl", "pool.jsonl", "template.json"))
        write_examples(out / "train.jsonl", labeled + kept)
        (out / "info.json").write_text(json.dumps(
            {**info, "train_rows": len(labeled) + len(kept), "labeled_rows": len(labeled),
             "teacher_rows": len(kept)}, indent=2))
        with (out / "answers.jsonl").open("w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record) + "\n")
        (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


def merge(model_dir: Path, adapter_dir: Path, out: Path, hardware=None, quantized: bool = False) -> dict:
    from promptintern.merge import merge_adapter

    with resource_errors("merging the adapter into the base model", out,
                         memory_hint="free memory (merging holds the base model and the merged copy)"):
        check = merge_adapter(model_dir, adapter_dir / "adapter", out, hardware=hardware, quantized=quantized)
        (out / "merge_check.json").write_text(json.dumps(check, indent=2))
    return check


# ---------------------------------------------------------------------------------------------
# benchmark
# ---------------------------------------------------------------------------------------------


def package_for_serving(merged_dir: Path, dataset_dir: Path, template_dir: Path | None, k: int,
                        max_new_tokens: int, out: Path, chat: str = "off") -> dict:
    """The internalized model as a serving folder: the merged weights (hard links) plus
    ``serving.json``, the exact prompt form it expects (``promptintern.serving``)."""
    from promptintern.models import load_tokenizer
    from promptintern.prompts import use_chat
    from promptintern.report import prompt_form
    from promptintern.serving import serving_spec, write_serving
    from promptintern.taskfile import read_task_file

    task = get_task(json.loads((dataset_dir / "info.json").read_text())["task"])
    template_text = read_template_text(template_dir)
    tau = json.loads((template_dir / "stats.json").read_text())["tau"] if template_dir else 0.0
    tokenizer = load_tokenizer(merged_dir)
    spec = serving_spec(tokenizer, task.format, template_text, k, use_chat(chat, tokenizer, "serving package"),
                        task=task.name, prompt_form=prompt_form(tau, k), stop=task.stop,
                        postprocess=read_task_file(task.source).metric.postprocess,
                        max_new_tokens=max_new_tokens, merged_model=merged_dir.name)
    with resource_errors("writing the serving folder", out):
        return write_serving(merged_dir, spec, out)


def benchmark_prompts(model_dir: Path, dataset_dir: Path, template_dir: Path | None, bank_dir: Path | None,
                      k: int, label: str, chat: str = "off") -> tuple[Task, list[Example], str, list[str], bool]:
    """The task, its test rows, the template text, one prompt per test row and whether they went
    through the chat template, as a benchmark
    feeds them to ``model_dir`` (template at its rate, the row's k most similar training rows;
    through the model's chat template when ``chat`` says so, see ``promptintern.prompts.use_chat``)."""
    from promptintern.models import load_tokenizer
    from promptintern.prompts import use_chat

    task = get_task(json.loads((dataset_dir / "info.json").read_text())["task"])
    pool = read_shot_pool(dataset_dir)
    test = read_examples(dataset_dir / "test.jsonl")
    neighbors = load_neighbors(bank_dir, "test") if k else None
    if k and (neighbors is None or neighbors.shape[1] < k):
        raise ValueError(f"benchmark {label!r} needs {k} shots but the bank holds fewer")
    template_text = read_template_text(template_dir)
    tokenizer = load_tokenizer(model_dir)
    check_template_fits(template_text, tokenizer, model_dir, f"benchmark {label!r}")
    as_chat = use_chat(chat, tokenizer, f"benchmark {label!r}")
    prompts = [
        render(task.format, row.query, template_text,
               [(pool[j].query, pool[j].target) for j in neighbors[i, :k][::-1]] if k else [],
               tokenizer=tokenizer, chat=as_chat)
        for i, row in enumerate(test)
    ]
    return task, test, template_text, prompts, as_chat


def benchmark(model_dir: Path, dataset_dir: Path, template_dir: Path | None, bank_dir: Path | None,
              k: int, cfg: EvalSettings, label: str, out: Path, chat: str = "off", hardware=None) -> dict:
    """Generate for every test row with the given prompt form and score it.

    Writes ``predictions.jsonl`` (prompt tokens, raw completion, extracted answer, reference)
    and ``metrics.json`` (scores, input tokens per query, seconds per instance, provenance).
    """
    from promptintern.cost import cost_report, count_openai_tokens
    from promptintern.cpu import set_torch_threads
    from promptintern.evaluate.common import is_looping
    from promptintern.device import Hardware
    from promptintern.generate import generate_with, load_for_generation
    from promptintern.models import load_tokenizer

    hardware = hardware or Hardware("cpu", "fp32")
    precision = cfg.precision or hardware.dtype
    info = json.loads((dataset_dir / "info.json").read_text())
    task, test, template_text, prompts, as_chat = benchmark_prompts(model_dir, dataset_dir, template_dir, bank_dir,
                                                                    k, label, chat)
    check_prompts_fit(prompts, model_dir, cfg.max_new_tokens, f"benchmark {label!r}")
    with resource_errors(f"generation for benchmark {label!r} at eval.batch_size={cfg.batch_size}", out,
                         memory_hint="lower eval.batch_size or eval.max_new_tokens"):
        set_torch_threads()  # the model is loaded once, for the answers and the cache timing sample
        model, tokenizer = load_for_generation(model_dir, hardware, precision), load_tokenizer(model_dir)
        gens = generate_with(model, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens,
                             batch_size=cfg.batch_size, stop=task.stop, prefix_cache=cfg.prefix_cache)
        template_cached = _template_cached(model, tokenizer, prompts, gens, template_text, task, cfg)
        del model
    answers = [task.postprocess(t) for t in gens.texts]
    # a completion that ran to the token limit repeating itself: greedy decoding caught in a loop
    at_limit = [n >= cfg.max_new_tokens for n in gens.output_tokens]
    looping = [limit and is_looping(t) for t, limit in zip(gens.texts, at_limit)]
    scores = task.score(answers, test, {
        "mode": cfg.sandbox, "workers": cfg.sandbox_workers, "timeout_s": cfg.sandbox_timeout_s})
    verdicts = scores.pop("per_task", None) or [{} for _ in test]
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as fh:
        for row, raw, ans, n_in, loops, verdict in zip(test, gens.texts, answers, gens.input_tokens, looping, verdicts):
            fh.write(json.dumps({"id": row.id, "input_tokens": n_in, "completion": raw, "prediction": ans,
                                 "reference": row.target, "looping": loops, **{f"exec_{k}": v for k, v in verdict.items()
                                                             if k != "id"}}) + "\n")
    in_tokens = float(np.mean(gens.input_tokens))
    out_tokens = float(np.mean(gens.output_tokens))
    # API prices are per OpenAI token: count with cl100k_base when it is available offline,
    # else with the model's own tokenizer (and say which).
    openai_in, openai_out = count_openai_tokens(prompts), count_openai_tokens(gens.texts)
    if openai_in is not None and openai_out is not None:
        cost = cost_report(float(np.mean(openai_in)), float(np.mean(openai_out)),
                           gens.seconds_per_instance, len(test), tokenizer="cl100k_base")
    else:
        cost = cost_report(in_tokens, out_tokens, gens.seconds_per_instance, len(test),
                           tokenizer="the model's own (cl100k_base not available offline)")
    if template_cached is not None:  # the same prompts with the template served from a prompt cache
        prefix_tokens = template_cached["prefix_tokens"]
        if openai_in is not None:  # the cached prefix in OpenAI tokens, as the prices count it
            prefix_tokens = count_openai_tokens(template_cached.pop("prefix_text"))[0]
        template_cached.pop("prefix_text", None)
        template_cached["cost"] = cost_report(
            cost.input_tokens_per_query, cost.output_tokens_per_query, gens.seconds_per_instance, len(test),
            tokenizer=cost.tokenizer, cached_input_tokens_per_query=min(prefix_tokens, cost.input_tokens_per_query),
        ).model_dump()
    metrics = {
        "label": label,
        **scores,
        "k": k,
        "template_chars": len(template_text),
        "input_tokens_per_query": in_tokens,
        "output_tokens_per_query": out_tokens,
        "looping_rate": 100.0 * float(np.mean(looping)) if looping else 0.0,
        "token_limit_rate": 100.0 * float(np.mean(at_limit)) if at_limit else 0.0,
        "openai_input_tokens_per_query": float(np.mean(openai_in)) if openai_in else None,
        "seconds_per_instance": gens.seconds_per_instance,
        "instances_per_second": cost.instances_per_second,
        "cost": cost.model_dump(),
        "generation_seconds": gens.seconds,
        "batch_size": gens.batch_size,
        "max_new_tokens": cfg.max_new_tokens,
        "model": model_dir.name,
        "dataset": info,
        "decoding": "greedy" + ("" if precision == "fp32" else f", {precision} weights"),
        "device": hardware.kind,
        "prompt_style": "chat" if as_chat else "plain",
        "prefix_cache": cfg.prefix_cache,
        "shared_prefix_tokens": gens.prefix_tokens,
        "template_cached": template_cached,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _template_cached(model, tokenizer, prompts: list[str], gens, template_text: str, task,
                     cfg: EvalSettings) -> dict | None:
    """For prompts that carry a template: what serving them with the template in a prompt cache
    costs in time, against recomputing it on every call. The main generation used the cache (when
    ``eval.prefix_cache``); the first ``eval.cache_timing_rows`` rows are generated again with and
    without it, side by side, and the time of the other mode is the main run's scaled by their
    ratio. None: no template, no shared prefix, or not measured."""
    from promptintern.generate import time_prefix_cache_with

    if not template_text or not cfg.cache_timing_rows:
        return None
    # timed with the main run's own model (its eval.precision)
    sample = time_prefix_cache_with(model, tokenizer, prompts[: cfg.cache_timing_rows], cfg.max_new_tokens,
                                    cfg.batch_size, task.stop)
    if not sample["prefix_tokens"]:
        return None
    texts = sample.pop("cached_texts")
    ratio = sample["uncached_seconds_per_instance"] / max(sample["cached_seconds_per_instance"], 1e-9)
    main = gens.seconds_per_instance
    ids = tokenizer(prompts[0], add_special_tokens=False)["input_ids"][: sample["prefix_tokens"]]
    return {
        "prefix_tokens": sample["prefix_tokens"],
        "prefix_text": tokenizer.decode(ids),
        "seconds_per_instance": main if cfg.prefix_cache else main / ratio,
        "recomputed_seconds_per_instance": main * ratio if cfg.prefix_cache else main,
        "speedup": ratio,
        # the same answers with and without the cache (and as in the main run), on the sample
        "answers_agree": sample["answers_agree"],
        "answers_agree_with_main_run": sum(a == b for a, b in zip(texts, gens.texts)) / max(1, len(texts)),
        "sample": sample,
    }
