"""The DAG's boxes as cached Prefect tasks. Each: key -> folder -> one library call -> path.

Every task takes ``root`` (the artifact root) plus small typed values and upstream folder paths
(relative to ``root``), and returns its own folder's path relative to ``root``. See
``tasks.caching`` for the cache policy; results live beside the artifacts they describe.

Every box is retried where a retry can help and only there (``is_transient``): an I/O hiccup or a
crashed worker pool, not bad config or bad data, which fail the same way every time. A retried
training stage resumes from its last checkpoint.
"""

from __future__ import annotations

import errno
import json
import time
from concurrent.futures import BrokenExecutor
from pathlib import Path
from typing import Callable

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.logging import get_run_logger

from promptintern import pipeline
from promptintern.config import CompressionConfig, EvalSettings, LoraSettings, RetrievalConfig, TrainSettings
from promptintern.curriculum import StagePlan
from promptintern.models import prepare_model
from promptintern.schedule import StageSpec
from tasks.caching import folder_cache_key, materialize
from tasks.locking import FlockLockManager

# Library modules each box runs: their source is part of the box's cache key.
_BASE = ("promptintern.pipeline", "promptintern.artifacts", "tasks.caching")
CODE = {
    "models": ("promptintern.models",) + _BASE,
    "datasets": ("promptintern.datasets", "promptintern.datasets.base", "promptintern.datasets.mbpp",
                 "promptintern.datasets.nl2f", "promptintern.taskfile", "promptintern.prompts") + _BASE,
    "templates": ("promptintern.compress", "promptintern.compress_llmlingua2",
                  "promptintern.compress_selective_context", "promptintern.compress_api",
                  "promptintern.prompts") + _BASE,
    "banks": ("promptintern.retrieve",) + _BASE,
    "shards": ("promptintern.shards", "promptintern.prompts", "promptintern.schedule",
               "promptintern.export") + _BASE,
    "adapters": ("promptintern.train", "promptintern.curriculum", "promptintern.probe", "promptintern.generate",
                 "promptintern.distill", "promptintern.config") + _BASE,
    "teachers": ("promptintern.teacher", "promptintern.train") + _BASE,
    "teacher-answers": ("promptintern.generate", "promptintern.retrieve", "promptintern.datasets",
                        "promptintern.datasets.base", "promptintern.taskfile", "promptintern.prompts") + _BASE,
    "merged": ("promptintern.merge",) + _BASE,
    "serving": ("promptintern.serving", "promptintern.prompts", "promptintern.taskfile") + _BASE,
    "evals": ("promptintern.generate", "promptintern.evaluate", "promptintern.evaluate.common",
              "promptintern.evaluate.nl2bash", "promptintern.evaluate.mbpp", "promptintern.evaluate.nl2f",
              "promptintern.evaluate.execution", "promptintern.taskfile", "promptintern.prompts") + _BASE,
}


# OSErrors that come back on a retry: a full disk or quota stays full, a missing or forbidden
# path stays so (the input is wrong, not the weather).
_LASTING_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
_LASTING_OSERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
RETRIES, RETRY_DELAY_SECONDS = 2, [5, 30]


def is_transient(exc: BaseException) -> bool:
    """Worth a retry: an OSError that is not lasting (EIO, a stale NFS handle, a timeout, a reset
    connection, EAGAIN from fork) or a crashed worker pool (``BrokenExecutor``). Everything else,
    our ValueErrors and DataErrors, pydantic's ValidationError, ResourceExhausted (disk full, out
    of memory), a missing input file, is a verdict, not an accident: one attempt."""
    if isinstance(exc, BrokenExecutor):
        return True
    return (isinstance(exc, OSError) and not isinstance(exc, _LASTING_OSERRORS)
            and exc.errno not in _LASTING_ERRNOS)


def retry_if_transient(_task, _task_run, state) -> bool:
    """Prefect's ``retry_condition_fn``: the failed state carries the exception as its data."""
    return isinstance(state.data, BaseException) and is_transient(state.data)


def _cached(kind: str, **options):
    """@task with the folder cache for ``kind``, SERIALIZABLE: concurrent runs that need the same
    folder (the variants of a sweep) wait for the first to build it, then read it as ``Cached``.
    Retried twice (after 5 s, then 30 s) when ``is_transient`` says a retry can help."""
    policy = CacheKeyFnPolicy(cache_key_fn=folder_cache_key(kind, CODE[kind])).configure(
        lock_manager=FlockLockManager(), isolation_level="SERIALIZABLE")
    return task(cache_policy=policy, persist_result=True, name=options.pop("name", kind),
                retries=RETRIES, retry_delay_seconds=RETRY_DELAY_SECONDS,
                retry_condition_fn=retry_if_transient, **options)


class ProgressRate:
    """When a long box reports progress (a log line and a progress-artifact update, each an event
    that `prefect deployment run --watch` and the UI print): the first and the last step, and in
    between at most every ``seconds`` and only after ``fraction`` more of the work. A 12-step stage
    used to report every step, a few times a second."""

    def __init__(self, seconds: float = 10.0, fraction: float = 0.05, clock: Callable[[], float] = time.monotonic):
        self.seconds, self.fraction, self.clock = seconds, fraction, clock
        self.last_time: float | None = None
        self.last_done = 0

    def due(self, done: int, total: int) -> bool:
        now = self.clock()
        first, last = self.last_time is None, done >= total
        if not (first or last or (now - self.last_time >= self.seconds
                                  and (done - self.last_done) >= self.fraction * total)):
            return False
        self.last_time, self.last_done = now, done
        return True


def _hardware(hardware: dict | None):
    """The resolved ``promptintern.device.Hardware`` a box was given as {device, dtype} (None: the CPU)."""
    from promptintern.device import Hardware

    return Hardware(**hardware) if hardware else None


def _path(root: str, rel: str | None) -> Path | None:
    return None if rel is None else Path(root) / rel


def _log_json(title: str, folder: Path, name: str = "stats.json") -> None:
    path = folder / name
    if path.is_file():
        get_run_logger().info("%s: %s", title, json.dumps(json.loads(path.read_text()), sort_keys=True))


@_cached("models", name="prepare-model")
def prepare_model_task(root: str, spec: str, fingerprint: str) -> str:
    """Resolve a model spec to a plain HF folder (converting SmolLM2's GGUF once)."""
    params = dict(locals())
    return materialize("models", CODE["models"], params, lambda out: prepare_model(spec, out))


@_cached("datasets", name="load-dataset")
def load_dataset_task(root: str, dataset: str, data_dir: str, data_digest: str, train_subset: int | None,
                      test_split: str | None, test_subset: int | None, seed: int, probe_split: str | None = None,
                      probe_rows: int | None = None) -> str:
    """Freeze the train/test rows of this run (subsets included), the probe rows of adaptive stage
    lengths when asked for, and the task template; ``test_split`` None: the training side alone."""
    params = dict(locals())
    rel = materialize("datasets", CODE["datasets"], params, lambda out: pipeline.prepare_dataset(
        dataset, data_dir, train_subset, test_split, test_subset, seed, out, probe_split, probe_rows))
    _log_json("dataset", Path(root) / rel, "info.json")
    return rel


@_cached("templates", name="compress-template")
def compress_template_task(root: str, dataset_dir: str, tau: float, compression: CompressionConfig,
                           compressor_dir: str, hardware: dict | None = None) -> str:
    """The template at rate tau (llmlingua on a local model; tau = 1 keeps it verbatim)."""
    params = dict(locals())
    rel = materialize("templates", CODE["templates"], params, lambda out: pipeline.compress(
        _path(root, dataset_dir), tau, compression, _path(root, compressor_dir), out, _hardware(hardware)))
    _log_json(f"template tau={tau}", Path(root) / rel)
    return rel


@_cached("banks", name="build-retrieval-bank")
def build_bank_task(root: str, dataset_dir: str, k: int, retrieval: RetrievalConfig, seed: int,
                    scored_only: bool = False) -> str:
    """Top-k most similar training rows for every training and test row (``scored_only``: test rows only)."""
    params = dict(locals())
    rel = materialize("banks", CODE["banks"], params, lambda out: pipeline.bank(
        _path(root, dataset_dir), k, retrieval, seed, out, scored_only))
    _log_json("bank", Path(root) / rel)
    return rel


@_cached("shards", name="materialize-shard")
def shard_task(root: str, dataset_dir: str, template_dir: str | None, bank_dir: str | None,
               spec: StageSpec, model_dir: str, chat: str = "off", replay: float = 0.0,
               final_spec: StageSpec | None = None, final_template_dir: str | None = None, seed: int = 0,
               split: str = "train") -> str:
    """One stage's Parquet shard: rendered prompts (plain, or through the model's chat template),
    targets, token counts; with ``replay``, a share of the rows in the final stage's form;
    ``split="dev"``: the probe rows in the stage's form (adaptive stage lengths)."""
    params = dict(locals())
    return materialize("shards", CODE["shards"], params, lambda out: pipeline.shard(
        _path(root, dataset_dir), _path(root, template_dir), _path(root, bank_dir), spec,
        _path(root, model_dir), out, chat, replay, final_spec, _path(root, final_template_dir), seed, split))


@_cached("adapters", name="train-stage")
def train_stage_task(root: str, model_dir: str, shard_dir: str, init_adapter_dir: str | None,
                     lora: LoraSettings, train: TrainSettings, plan: StagePlan, probe_shard_dir: str | None = None,
                     dataset_dir: str | None = None, probe_generation: tuple[int, int] = (64, 8),
                     teacher_dir: str | None = None, distill_form: tuple[float, int] | None = None,
                     hardware: dict | None = None) -> str:
    """LoRA fine-tuning on one stage's shard, starting from the previous stage's adapter (and, when
    the plan says so, its optimizer state), for the plan's optimizer steps; with ``train.adaptive``
    and a probe shard (dev rows in the next stage's form), until their score stops improving."""
    params = dict(locals())
    stage = plan.stage
    logger = get_run_logger()
    progress = create_progress_artifact(0.0, description=f"stage {stage}: LoRA optimizer steps done (%)")
    rate = ProgressRate()

    def on_step(step: int, total: int, loss: float) -> None:
        if rate.due(step, total):
            logger.info("stage %d step %d/%d loss %.4f", stage, step, total, loss)
            update_progress_artifact(progress, 100.0 * step / total)

    rel = materialize("adapters", CODE["adapters"], params, lambda out: pipeline.train(
        _path(root, model_dir), _path(root, shard_dir), _path(root, init_adapter_dir), lora, train,
        stage, out, on_step=on_step, plan=plan, probe_shard_dir=_path(root, probe_shard_dir),
        dataset_dir=_path(root, dataset_dir), probe_generation=tuple(probe_generation),
        teacher_dir=_path(root, teacher_dir), distill_form=distill_form, hardware=_hardware(hardware)))
    update_progress_artifact(progress, 100.0)  # also when another run had built the folder meanwhile
    _log_json(f"stage {stage}", Path(root) / rel)
    return rel


@_cached("teachers", name="teacher-logits")
def teacher_logits_task(root: str, model_dir: str, adapter_dir: str | None, shard_dir: str, top_k: int,
                        max_seq_len: int, temperature: float, hardware: dict | None = None) -> str:
    """The distillation teacher's top-k answer logits on the full-prompt rows: computed once, read
    by every stage that distills."""
    params = dict(locals())
    rel = materialize("teachers", CODE["teachers"], params, lambda out: pipeline.teacher_logits(
        _path(root, model_dir), _path(root, adapter_dir), _path(root, shard_dir), top_k, max_seq_len, temperature,
        out, _hardware(hardware)))
    _log_json("teacher logits", Path(root) / rel)
    return rel


@_cached("teacher-answers", name="teacher-answers")
def teacher_answers_task(root: str, model_dir: str, dataset_dir: str, data_dir: str, data_digest: str,
                         template_dir: str | None, k: int, retrieval: RetrievalConfig, queries: int,
                         max_new_tokens: int, batch_size: int, precision: str | None = None,
                         prefix_cache: bool = True, chat: str = "off", hardware: dict | None = None) -> str:
    """The teacher, with the full prompt, answers training queries whose references are set aside;
    a dataset folder of the labeled rows plus the kept answers (sequence-level distillation)."""
    params = dict(locals())
    rel = materialize("teacher-answers", CODE["teacher-answers"], params, lambda out: pipeline.teacher_answers(
        _path(root, model_dir), _path(root, dataset_dir), data_dir, _path(root, template_dir), k, retrieval,
        queries, out, max_new_tokens, batch_size, precision, prefix_cache, chat, _hardware(hardware)))
    _log_json("teacher answers", Path(root) / rel)
    return rel


@_cached("merged", name="merge-adapter")
def merge_task(root: str, model_dir: str, adapter_dir: str, hardware: dict | None = None,
               quantized: bool = False) -> str:
    """Fold the adapter into the base weights (de-quantized when it was trained on a 4-bit base);
    verified on a probe batch."""
    params = dict(locals())
    rel = materialize("merged", CODE["merged"], params, lambda out: pipeline.merge(
        _path(root, model_dir), _path(root, adapter_dir), out, _hardware(hardware), quantized))
    _log_json("merge check", Path(root) / rel, "merge_check.json")
    return rel


@_cached("serving", name="package-for-serving")
def serving_task(root: str, merged_dir: str, dataset_dir: str, template_dir: str | None, k: int,
                 max_new_tokens: int, chat: str = "off") -> str:
    """The merged model as a Hugging Face folder plus serving.json: the prompt form it expects."""
    params = dict(locals())
    rel = materialize("serving", CODE["serving"], params, lambda out: pipeline.package_for_serving(
        _path(root, merged_dir), _path(root, dataset_dir), _path(root, template_dir), k, max_new_tokens, out, chat))
    _log_json("serving", Path(root) / rel, "serving.json")
    return rel


@_cached("evals", name="benchmark")
def benchmark_task(root: str, model_dir: str, dataset_dir: str, template_dir: str | None,
                   bank_dir: str | None, k: int, eval: EvalSettings, label: str, chat: str = "off",
                   hardware: dict | None = None) -> str:
    """Generate and score the test rows with one prompt form; time it and count tokens."""
    params = dict(locals())
    rel = materialize("evals", CODE["evals"], params, lambda out: pipeline.benchmark(
        _path(root, model_dir), _path(root, dataset_dir), _path(root, template_dir),
        _path(root, bank_dir), k, eval, label, out, chat, _hardware(hardware)))
    _log_json(label, Path(root) / rel, "metrics.json")
    return rel
