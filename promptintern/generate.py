"""Batched greedy generation, timed.

``generate`` returns one completion per prompt (cut at the task's stop strings) plus timing:
seconds for the whole set and per instance, and input / output token counts per prompt.

Two engines give the same answers (tests compare them token for token):

* ``"loop"`` (the default, ``promptintern.decode``): the token prefix that every prompt shares
  (the template) is prefilled once and reused by every row (``prefix_cache``), and the batch is
  continuous: a finished row leaves it at once and the next waiting row takes its slot;
* ``"hf"``: HF ``model.generate`` on left-padded batches, the reference.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from promptintern.decode import common_prefix_len, greedy_stream, prefill
from promptintern.cpu import set_torch_threads
from promptintern.models import load_model, load_tokenizer

ENGINES = ("loop", "hf")


@dataclass
class Generations:
    texts: list[str]
    input_tokens: list[int]
    output_tokens: list[int]
    seconds: float
    batch_size: int
    prefix_tokens: int = 0  # the shared prefix prefilled once (0: none, or the "hf" engine)

    @property
    def seconds_per_instance(self) -> float:
        return self.seconds / max(1, len(self.texts))


class StopInCompletion(StoppingCriteria):
    """Stop each row once its completion (the new tokens only) contains a stop string.

    Hand-written because transformers' own ``stop_strings`` (``StopStringCriteria``) matches the end
    of the whole sequence, prompt included: with MBPP's stop ``"\n```"`` after a prompt that ends in
    a newline, the answer's opening fence completes the stop string across the boundary and every
    completion is cut after its first token. Decoding the new tokens each step is cheap beside the
    model's step: 0.84 ms for 8 rows of 192 new tokens against about 150 ms for SmolLM2-135M's step
    on 2 CPU cores."""

    def __init__(self, tokenizer, stop: Sequence[str], prompt_length: int):
        self.tokenizer, self.stop, self.prompt_length = tokenizer, tuple(stop), prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], dtype=torch.bool,
                            device=input_ids.device)


def stopping_criteria(tokenizer, stop: Sequence[str], prompt_length: int) -> StoppingCriteriaList:
    """What ``model.generate`` takes to stop on ``stop`` (none when empty), for prompts padded to
    ``prompt_length`` tokens."""
    return StoppingCriteriaList([StopInCompletion(tokenizer, stop, prompt_length)] if stop else [])


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = len(text)
    for s in stop:
        pos = text.find(s)
        if pos != -1:
            cut = min(cut, pos)
    return text[:cut]


@torch.no_grad()
def generate(
    model_dir: str | Path,
    prompts: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 8,
    stop: Sequence[str] = (),
    progress: bool = True,
    prefix_cache: bool = True,
    engine: str = "loop",
    precision: str | None = None,
    hardware=None,
) -> Generations:
    """Greedy-decode every prompt, ``batch_size`` rows at a time, shortest prompts first, on
    ``hardware`` (a ``promptintern.device.Hardware``; None: the CPU). ``precision``: the weights'
    number format for generation (``load_for_generation``; None: the hardware's dtype)."""
    set_torch_threads()
    return generate_with(load_for_generation(model_dir, hardware, precision), load_tokenizer(model_dir), prompts,
                         max_new_tokens, batch_size, stop, progress, prefix_cache, engine)


PRECISIONS = ("fp32", "bf16", "fp16", "int8-dynamic")


def load_for_generation(model_dir, hardware=None, precision: str | None = None):
    """The model to generate with: on a GPU loaded in ``precision`` (None: the hardware's dtype); on
    the CPU loaded in fp32 and converted (``with_precision``), as every published CPU answer was."""
    from promptintern.device import DeviceError, Hardware

    hardware = hardware or Hardware("cpu", "fp32")
    precision = precision or hardware.dtype
    if hardware.kind == "cpu":
        if precision == "fp16":
            raise DeviceError("eval.precision='fp16' on the CPU: torch's CPU fp16 kernels are slow or missing; "
                              "use fp32, bf16 or int8-dynamic")
        return with_precision(load_model(model_dir, Hardware("cpu", "fp32")), precision)
    if precision == "int8-dynamic":
        raise DeviceError("eval.precision='int8-dynamic' is torch's CPU quantization; on a GPU use bf16 or fp16")
    return load_model(model_dir, Hardware(hardware.device, precision))


def with_precision(model, precision: str = "fp32"):
    """The model for inference in ``precision``: ``fp32`` as it is; ``bf16`` every weight in
    bfloat16; ``int8-dynamic`` the Linear layers in int8, activations quantized per batch
    (``torch.ao.quantization.quantize_dynamic``).

    Why offer them: a decode step streams every weight once, and on a CPU an fp32 batch-8 matmul
    also runs far below the core's peak. bf16 halves the bytes (and uses AVX512-BF16 where the CPU
    has it); int8 quarters them and takes fbgemm's prepacked kernels (one core, batch 8: the LM
    head ~10x faster than fp32). Both change answers (rounding): ``benchmarks/bench_quantize.py``
    measures by how much, and a benchmark run in either says so in its decoding line."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: allowed {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return model
    if precision in ("bf16", "fp16"):
        return model.to(torch.bfloat16 if precision == "bf16" else torch.float16)
    import warnings

    with warnings.catch_warnings():  # torch.ao's eager quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


@torch.no_grad()
def generate_with(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 64, batch_size: int = 8,
                  stop: Sequence[str] = (), progress: bool = True, prefix_cache: bool = True,
                  engine: str = "loop") -> Generations:
    """``generate`` with a model already in memory (a LoRA model in training, for a dev probe).
    ``prefix_cache``: prefill the prompts' shared token prefix once (the ``loop`` engine only);
    the time it takes is part of ``seconds``."""
    from tqdm.auto import tqdm

    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: allowed {', '.join(ENGINES)}")
    if engine == "loop" and sliding_window(model):
        # a sliding-window cache drops old keys as it goes: our loop's masks, its shared prefix and
        # its joined batches assume every key stays, so such models take HF generate
        engine = "hf"
    tokenizer.padding_side = "left"
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    texts: list[str] = [""] * len(prompts)
    out_tokens = [0] * len(prompts)
    started = time.perf_counter()
    shared = common_prefix_len(encoded) if engine == "loop" and prefix_cache else 0
    prefix = prefill(model, encoded[0][:shared]) if shared else None

    def stopped(ids: list[int]) -> bool:  # a stop string in the row's new tokens
        text = tokenizer.decode(ids, skip_special_tokens=True)
        return any(s in text for s in stop)

    if engine == "hf":
        results: list[list[int]] = []
        for start in tqdm(range(0, len(order), batch_size), desc="generate", unit="batch",
                          disable=not progress, leave=False):
            results += _hf_generate(model, tokenizer, [encoded[i] for i in order[start : start + batch_size]],
                                    max_new_tokens, stop)
    else:
        with tqdm(total=len(order), desc="generate", unit="row", disable=not progress, leave=False) as bar:
            results = greedy_stream(model, [encoded[i][shared:] for i in order], max_new_tokens,
                                    tokenizer.eos_token_id, tokenizer.pad_token_id, prefix,
                                    stopped if stop else None, batch_size=batch_size, on_done=bar.update)
    for ids, i in zip(results, order):
        # count up to and including the first EOS / pad: what the model actually produced
        n = next((j + 1 for j, t in enumerate(ids) if t in (tokenizer.eos_token_id, tokenizer.pad_token_id)), len(ids))
        out_tokens[i] = n
        texts[i] = cut_at_stop(tokenizer.decode(ids[:n], skip_special_tokens=True), stop)
    seconds = time.perf_counter() - started
    return Generations(texts, [len(e) for e in encoded], out_tokens, seconds, batch_size, shared)


def sliding_window(model) -> bool:
    """Whether the model's KV cache keeps only a window of recent keys in some layer (Mistral v0.1,
    Gemma 2/3, Qwen2 with use_sliding_window)."""
    config = getattr(model, "config", None)
    if config is None:
        return False
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return True
    return bool(getattr(config, "sliding_window", None)) and getattr(config, "use_sliding_window", True) is not False


@torch.no_grad()
def time_prefix_cache_with(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 64, batch_size: int = 8,
                           stop: Sequence[str] = (), repeats: int = 1) -> dict:
    """The same prompts generated with and without the shared-prefix cache, side by side, with a
    model already in memory (the benchmark box's own; the order alternates between repeats;
    medians): seconds per instance of each, and how many answers agree."""
    seconds: dict[bool, list[float]] = {True: [], False: []}
    texts: dict[bool, list[str]] = {}
    prefix_tokens = 0
    for r in range(repeats):
        for cached in (True, False) if r % 2 == 0 else (False, True):
            gens = generate_with(model, tokenizer, prompts, max_new_tokens, batch_size, stop, progress=False,
                                 prefix_cache=cached)
            seconds[cached].append(gens.seconds)
            texts[cached] = gens.texts
            prefix_tokens = max(prefix_tokens, gens.prefix_tokens)
    n = max(1, len(prompts))
    return {"rows": len(prompts), "repeats": repeats, "prefix_tokens": prefix_tokens,
            "cached_seconds_per_instance": statistics.median(seconds[True]) / n,
            "uncached_seconds_per_instance": statistics.median(seconds[False]) / n,
            "answers_agree": sum(a == b for a, b in zip(texts[True], texts[False])) / n,
            "cached_texts": texts[True]}


def _hf_generate(model, tokenizer, rows: list[list[int]], max_new_tokens: int, stop: Sequence[str]) -> list[list[int]]:
    """One left-padded batch through HF ``model.generate``: each row's new token ids."""
    batch = tokenizer.pad({"input_ids": rows}, return_tensors="pt").to(model.device)
    out = model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        stopping_criteria=stopping_criteria(tokenizer, stop, batch["input_ids"].shape[1]),
    )
    return out[:, batch["input_ids"].shape[1] :].tolist()
