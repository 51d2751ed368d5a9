"""How much memory a LoRA training stage needs, estimated before any weight is loaded.

A stage holds: the frozen base weights; the LoRA weights with their gradients and two AdamW
moments (fp32); the activations autograd keeps for the backward pass; the LM head's logits on the
answer tokens (the trainer runs the head on those only) with their gradient; and the framework.

Weights and LoRA parameters are counted exactly, from the model's config: the model is built on
PyTorch's ``meta`` device (shapes, no storage: a 7B model costs nothing) and PEFT wraps it as the
trainer would. Activations are *measured*, not derived from a formula: the same meta model with one
and with two decoder layers runs a forward pass at two short lengths under autograd's
saved-tensor hooks, which sum the bytes of every tensor kept for backward (parameters excluded);
the difference between the layer counts is one layer's cost, split into a part linear in the
sequence length and a part quadratic in it (attention probabilities, which only the eager
attention keeps: the fused kernels, SDPA's on CPU and CUDA and FlashAttention, keep q, k, v, the
output and a log-sum-exp instead). Why measure: a hand count for a Llama layer missed ~40% of what
autograd keeps (RMSNorm's fp32 intermediates, RoPE's products, LoRA dropout's copies of its input),
and the measurement follows any architecture transformers can build.

``estimate_training(...)`` returns a ``MemoryEstimate``; ``shortfall(estimate, available)`` says,
when it does not fit, by how much and which settings shrink which part.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

GB = 2**30
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# Python, torch and its allocator's slack: measured 0.45 GB RSS for an imported torch + transformers
# on the CPU before any model; a CUDA context adds ~0.5-1 GB more (the GPU check measures it)
OVERHEAD = {"cpu": int(0.5 * GB), "cuda": int(1.0 * GB)}
# lengths the activation probe runs at (short: the meta device is free, the hooks are Python)
_PROBE_LENGTHS = (16, 32)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes, by what holds them."""

    weights: int  # the frozen base model
    trainable: int  # LoRA weights + gradients + AdamW's two moments, fp32
    activations: int  # what autograd keeps for backward, every layer, the whole batch
    logits: int  # the LM head on the answer tokens, fp32, and its gradient
    overhead: int
    detail: dict = field(default_factory=dict, compare=False)

    @property
    def total(self) -> int:
        return self.weights + self.trainable + self.activations + self.logits + self.overhead

    def describe(self) -> str:
        parts = ", ".join(f"{name} {getattr(self, name) / GB:.2f}"
                          for name in ("weights", "trainable", "activations", "logits", "overhead"))
        return f"~{self.total / GB:.2f} GB ({parts} GB)"


def _config(model_dir: str | Path) -> dict:
    return json.loads((Path(model_dir) / "config.json").read_text())


def _meta_model(config: dict, layers: int | None, dtype: str, lora: dict | None):
    """The model (``layers`` decoder layers, None: as configured) on the meta device, LoRA-wrapped."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = dict(config)
    if layers is not None:
        config["num_hidden_layers"] = layers
        config.pop("layer_types", None)  # per-layer lists sized to the real depth
    cfg = AutoConfig.for_model(**{k: v for k, v in config.items() if k not in ("architectures", "transformers_version")})
    cfg.architectures = config.get("architectures")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype={"fp32": torch.float32, "bf16": torch.bfloat16,
                                                             "fp16": torch.float16}[dtype])
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                                 target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM"))
    return model


def _saved_bytes(model, batch: int, length: int) -> int:
    """Bytes autograd keeps for backward in one forward pass (parameters and views of them excluded)."""
    import torch

    params = {id(p) for p in model.parameters()}
    seen: dict[tuple, int] = {}

    def pack(t):
        base = t._base if t._base is not None else t
        if id(t) not in params and id(base) not in params:
            seen[(id(base), t.storage_offset(), tuple(t.shape), t.stride())] = t.numel() * t.element_size()
        return t

    model.train()
    ids = torch.zeros((batch, length), dtype=torch.long, device="meta")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, logits_to_keep=1)  # the head on one position: the logits are counted apart
    return sum(seen.values())


@lru_cache(maxsize=32)
def _layer_cost(config_json: str, dtype: str, lora_json: str) -> tuple[float, float]:
    """(bytes per token, bytes per token per token of length) one decoder layer keeps for backward:
    ``a * S + c * S**2`` per sequence of length S."""
    config, lora = json.loads(config_json), json.loads(lora_json)
    per_seq = []
    for length in _PROBE_LENGTHS:
        one = _saved_bytes(_meta_model(config, 1, dtype, lora), 1, length)
        two = _saved_bytes(_meta_model(config, 2, dtype, lora), 1, length)
        per_seq.append(two - one)
    (s1, s2), (b1, b2) = _PROBE_LENGTHS, per_seq
    # b = a*s + c*s^2 at both lengths
    c = (b2 / s2 - b1 / s1) / (s2 - s1)
    a = b1 / s1 - c * s1
    return a, max(c, 0.0)


def parameter_counts(model_dir: str | Path, lora: dict | None = None) -> dict[str, int]:
    """``total`` parameters of the base model, ``trainable`` LoRA parameters, and ``quantizable``: the
    base's Linear weights inside the decoder layers, what a 4-bit base stores in NF4 (exact)."""
    import torch

    model = _meta_model(_config(model_dir), None, "fp32", lora)
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad) if lora is not None else 0
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    quantizable = sum(m.weight.numel() for m in model.modules()
                      if type(m) is torch.nn.Linear and m is not head and not m.weight.requires_grad)
    return {"total": sum(p.numel() for p in params) - trainable, "trainable": trainable, "quantizable": quantizable}


# NF4 with double quantization: 4 bits a weight plus ~0.127 bits of scales (QLoRA paper, section 3)
NF4_BYTES = (4 + 0.127) / 8


def estimate_training(model_dir: str | Path, lora: dict, batch_size: int, seq_len: int,
                      answer_tokens: int | None = None, dtype: str = "fp32", device: str = "cpu",
                      attention: str = "sdpa", shared_prefix: int = 0, gradient_checkpointing: bool = False,
                      quantize: str | None = None) -> MemoryEstimate:
    """The memory one training step of a stage needs: ``batch_size`` rows of ``seq_len`` tokens, of
    which ``answer_tokens`` a row are trained on (the LM head runs there only; None: every token).
    ``lora``: r, alpha, dropout, target_modules. ``attention``: ``eager`` keeps the attention
    probabilities (quadratic in the length); the fused kernels do not. ``shared_prefix``: tokens
    every row starts with that the trainer runs once per batch (``train.share_prompt_prefix``).
    ``gradient_checkpointing``: every layer keeps only its input, and one layer at a time its whole
    activations (in the recompute). ``quantize="4bit"``: the layers' Linear weights in NF4."""
    config = _config(model_dir)
    counts = parameter_counts(model_dir, lora)
    layers = int(config["num_hidden_layers"])
    a, c = _layer_cost(json.dumps(config, sort_keys=True), dtype, json.dumps(lora, sort_keys=True, default=list))
    # the trainer runs rows whole under checkpointing (train.py), so no prefix is shared then
    shared = min(max(0, shared_prefix), seq_len - 1) if batch_size > 1 and not gradient_checkpointing else 0
    # the shared prefix's layers run for one row, every row's own suffix for each
    per_batch = a * (shared + batch_size * (seq_len - shared)) + (c * batch_size * seq_len**2
                                                                  if attention == "eager" else 0.0)
    vocab = int(config["vocab_size"])
    hidden = int(config["hidden_size"])
    answers = seq_len if answer_tokens is None else answer_tokens
    # outside the layers: the embeddings' output, the final norm, and per answer token the head's
    # input, fp32 logits, their log-softmax and the gradient of the logits
    outside = batch_size * (seq_len * hidden * DTYPE_BYTES[dtype] * 3 + answers * (hidden * 4 + vocab * 4 * 3))
    # checkpointed: every layer keeps its input, one layer at a time its whole set (in the recompute)
    activations = (layers * batch_size * seq_len * hidden * DTYPE_BYTES[dtype] + per_batch
                   if gradient_checkpointing else layers * per_batch)
    weights = counts["total"] * DTYPE_BYTES[dtype]
    if quantize == "4bit":
        weights -= int(counts["quantizable"] * (DTYPE_BYTES[dtype] - NF4_BYTES))
    return MemoryEstimate(
        weights=int(weights),
        trainable=counts["trainable"] * 4 * 4,
        activations=int(activations),
        logits=int(outside),
        overhead=OVERHEAD.get(device.split(":")[0], OVERHEAD["cpu"]),
        detail={"parameters": counts["total"], "lora_parameters": counts["trainable"], "layers": layers,
                "layer_bytes_per_token": round(a, 1), "layer_bytes_per_token_squared": round(c, 3),
                "batch_size": batch_size, "seq_len": seq_len, "answer_tokens": answers, "dtype": dtype,
                "shared_prefix": shared, "gradient_checkpointing": gradient_checkpointing, "device": device,
                "quantize": quantize},
    )


def available_memory(device: str = "cpu") -> int | None:
    """Bytes a new allocation can get: MemAvailable on Linux (None where unknown); on CUDA the free
    memory of the device."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def shortfall(estimate: MemoryEstimate, available: int | None, settings: Sequence[str] = ()) -> str | None:
    """None when the estimate fits in ``available`` bytes; else what is missing and what to change."""
    if available is None or estimate.total <= available:
        return None
    d = estimate.detail
    at_one = estimate.activations / max(1, d["batch_size"]) + estimate.logits / max(1, d["batch_size"])
    hints = [f"train.batch_size (activations and logits scale with it: {at_one / GB:.2f} GB a row)",
             f"train.max_seq_len (now {d['seq_len']} tokens a row)"]
    quantize = ("set train.quantize_base=4bit (QLoRA: the layers' weights in NF4, ~1/4 of their "
                f"{estimate.weights / GB:.2f} GB in {d.get('dtype')})")
    can_quantize = d.get("quantize") is None and d.get("dtype") != "fp32" and d.get("device", "cpu") != "cpu"
    if can_quantize and estimate.weights > available / 4:  # weights a large share of the GPU: worth it
        hints.insert(0, quantize)
    if not d.get("gradient_checkpointing") and estimate.activations > GB:
        hints.insert(0, f"set train.gradient_checkpointing=true (activations now {estimate.activations / GB:.2f} GB; "
                        f"checkpointed, each layer keeps only its input)")
    if estimate.weights > available:
        hints = ([quantize] if can_quantize else []) + [f"a smaller model: its weights alone are "
                                                        f"{estimate.weights / GB:.2f} GB"]
    return (f"a training step needs {estimate.describe()}, and {available / GB:.2f} GB is available; lower "
            + ", or ".join(list(settings) + hints))
