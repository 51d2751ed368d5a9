"""The device check: what the GPU path needs, measured on whatever this machine has.

One script for the day a GPU machine is lent (``scripts/gpu_check.sh``, ~8 minutes on one GPU, no
download: every model is random-initialised from a config), and a CPU fallback that runs the same
checks that do not need a GPU (under 2 minutes) and says which were skipped.

Checks, in order (each a row of the table and a key of the JSON line):

1. ``device``: what ``promptintern.device.resolve("auto", "auto")`` picks here, torch's view of the
   GPU (name, capability, bf16, free memory) or the CPU's cores and memory.
2. ``shared_prefix``: the trainer's shared-prefix loss and LoRA gradients against a plain forward,
   on the tiny model, on the resolved device in its dtype (max abs difference; fp32 must agree to
   1e-5).
3. ``prefix_cache``: greedy answers of the decoding loop with the template prefilled once and with
   continuous batching against HF ``generate``, on the device (same answers required).
4. ``memory``: the training memory estimate of a Llama-7B-shaped stage (LoRA r 32, batch 1, 1,024
   tokens, bf16) against this device's free memory, and the estimate's time.
5. ``flow``: the tiny preset's flow end to end on the example task, every box on the resolved device
   (``hardware.device: auto``), its wall time.
6. GPU only (skipped with a line on a CPU): ``train_7b``: a LoRA stage's step on the 7B-shaped model
   in bf16 (LoRA weights fp32, autocast, as the trainer runs it), tokens/s and model FLOP utilisation
   beside a plain ``transformers.Trainer`` on the same batches, peak memory against ``promptintern.memory``'s
   estimate, and the same with gradient checkpointing; ``generate_7b``: batched greedy decoding
   tokens/s; ``qlora`` (with bitsandbytes installed): a tiny stage on a 4-bit base, merged into the
   de-quantized base, checked against base + adapter.

    bash scripts/gpu_check.sh              # all of it
    python benchmarks/gpu_check.py --skip-flow --out /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from promptintern.machine import hardware  # noqa: E402
from promptintern.device import resolve  # noqa: E402

LLAMA_7B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
            "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False,
            "max_position_embeddings": 4096}
LORA = {"r": 32, "alpha": 64, "dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
# bf16 dense peak of the GPUs a check is likely to meet (TFLOP/s, no sparsity), for MFU
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def device_facts(hw) -> dict:
    facts = {"resolved": {"device": hw.device, "dtype": hw.dtype, "attention": hw.attention()},
             "torch": torch.__version__, "cuda": torch.version.cuda}
    if hw.kind == "cuda":
        props = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info()
        facts |= {"gpu": props.name, "capability": f"{props.major}.{props.minor}", "gpus": torch.cuda.device_count(),
                  "bf16": torch.cuda.is_bf16_supported(), "free_gb": round(free / 2**30, 1),
                  "total_gb": round(total / 2**30, 1)}
    else:
        h = hardware("torch", "transformers", "peft")
        facts |= {"cpu": h["cpu"], "cores": h["cores"], "mem_gb": h["mem_gb"]}
    return facts


def shared_prefix_check(model_dir: Path, hw) -> dict:
    """Loss and LoRA gradients with the shared template prefix run once vs a plain forward."""
    from peft import LoraConfig, get_peft_model

    from promptintern.models import load_model, load_tokenizer
    from promptintern.train import collate, encode_row, target_loss

    tok = load_tokenizer(model_dir)
    template = "Translate the request into one bash command. Quote paths, prefer find -print0. " * 3
    rows = [encode_row(tok, template + f"Task: {q}\nCommand:", t, 512)
            for q, t in [("list files", " ls -la"), ("count lines in a.txt", " wc -l a.txt"), ("x", " echo hi")]]
    batch = {k: v.to(hw.device) for k, v in collate(rows, tok.pad_token_id).items()}
    torch.manual_seed(0)
    model = get_peft_model(load_model(model_dir).to(hw.device),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    params = [p for p in model.parameters() if p.requires_grad]
    out = {}
    with torch.autocast(hw.kind, dtype=hw.torch_dtype, enabled=hw.dtype != "fp32"):
        for share in (True, False):
            loss = target_loss(model, batch, share_prefix=share)
            out[share] = (loss.detach().float(), torch.autograd.grad(loss, params))
    loss_diff = float((out[True][0] - out[False][0]).abs())
    grad_diff = max(float((a - b).abs().max()) for a, b in zip(out[True][1], out[False][1]))
    tolerance = 1e-5 if hw.dtype == "fp32" else 2e-2
    return {"loss_diff": loss_diff, "grad_diff": grad_diff, "tolerance": tolerance,
            "ok": loss_diff <= tolerance and grad_diff <= tolerance * 10}


def prefix_cache_check(model_dir: Path, hw) -> dict:
    """Greedy answers: our loop (template cached, continuous batching) vs HF generate."""
    from promptintern.generate import generate_with
    from promptintern.models import load_model, load_tokenizer

    model, tok = load_model(model_dir).to(hw.device), load_tokenizer(model_dir)
    template = "You translate requests into bash commands.\nUse only standard tools.\nAnswer with one line.\n\n"
    prompts = [f"{template}Request: {q}\nCommand:" for q in
               ("list files", "count the lines of every python file", "b", "show disk usage", "sort names.txt")]
    ours = generate_with(model, tok, prompts, 12, 2, progress=False)
    hf = generate_with(model, tok, prompts, 12, 2, progress=False, engine="hf")
    return {"answers_identical": f"{sum(a == b for a, b in zip(ours.texts, hf.texts))}/{len(prompts)}",
            "prefix_tokens": ours.prefix_tokens, "ok": ours.texts == hf.texts}


def memory_check(hw) -> dict:
    from promptintern.memory import available_memory, estimate_training, shortfall

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(LLAMA_7B))
        t0 = time.perf_counter()
        est = estimate_training(tmp, LORA, batch_size=1, seq_len=1024, answer_tokens=64, dtype="bf16",
                                device=hw.kind)
        seconds = time.perf_counter() - t0
    available = available_memory(hw.device)
    return {"model": "Llama-7B-shaped, LoRA r 32 on q/k/v/o, batch 1, 1,024 tokens, bf16",
            "estimate_gb": round(est.total / 2**30, 2), "parts": est.describe(), "estimate_s": round(seconds, 2),
            "available_gb": round(available / 2**30, 1) if available else None,
            "fits": shortfall(est, available) is None}


def flow_check() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "flows.dag", "--preset", "tiny", "--task",
                              "examples/unit-conversion/task.yaml", "--artifact-root", tmp],
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - t0
    return {"wall_s": round(seconds, 1), "ok": run.returncode == 0, "device": resolve("auto", "auto").device,
            **({} if run.returncode == 0 else {"error": (run.stderr or run.stdout)[-800:]})}


def train_7b_check(hw, steps: int = 4, batch: int = 4, length: int = 512) -> dict:
    """A LoRA stage's steps on the 7B-shaped model, ours (target_logits) vs HF's loss path; then ours
    with gradient checkpointing; peak memory of each against the estimate."""
    from promptintern.memory import estimate_training

    results = {}
    for checkpointing in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "config.json").write_text(json.dumps(LLAMA_7B))
            est = estimate_training(tmp, LORA, batch_size=batch, seq_len=length, answer_tokens=64, dtype=hw.dtype,
                                    device=hw.kind, attention=hw.attention(), gradient_checkpointing=checkpointing)
        run = _train_7b(hw, steps, batch, length, checkpointing)
        run["estimate_gb"] = round(est.total / 2**30, 1)
        results["checkpointed" if checkpointing else "plain"] = run
    return results


def _train_7b(hw, steps: int, batch: int, length: int, checkpointing: bool) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**{k: v for k, v in LLAMA_7B.items() if k != "architectures"})
    torch.cuda.reset_peak_memory_stats()
    with torch.device(hw.device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=hw.torch_dtype, attn_implementation=hw.attention())
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                             target_modules=LORA["target_modules"], task_type="CAUSAL_LM"))
    for p in model.parameters():  # as the trainer holds them: LoRA weights fp32, the base in bf16
        if p.requires_grad:
            p.data = p.data.float()
    model.train()
    ids = torch.randint(0, cfg.vocab_size, (batch, length), device=hw.device)
    labels = ids.clone()
    labels[:, : length - 64] = -100  # 64 answer tokens a row, as a task's rows have
    batch_ = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    results = {}
    for side in ("ours",) if checkpointing else ("ours", "hf_trainer"):
        times = (step_times_ours if side == "ours" else step_times_hf_trainer)(model, batch_, steps, hw)
        tokens_s = batch * length / (sum(times) / len(times))
        n = sum(p.numel() for p in model.parameters())
        flops_per_token = 4 * n  # forward 2N + backward through the frozen weights 2N (no weight grads)
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in torch.cuda.get_device_name(0)), None)
        results[side] = {"tokens_s": round(tokens_s, 1),
                         "mfu": round(tokens_s * flops_per_token / (peak * 1e12), 3) if peak else None}
    results["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    if "hf_trainer" in results:
        results["speedup_vs_hf_trainer"] = round(results["ours"]["tokens_s"] / results["hf_trainer"]["tokens_s"], 2)
    del model
    torch.cuda.empty_cache()
    return results


def _sync(hw) -> None:
    if hw.kind == "cuda":
        torch.cuda.synchronize()


def step_times_ours(model, batch: dict, steps: int, hw) -> list[float]:
    """Seconds of each optimizer step after the first (kernel warm-up) of our trainer's path: the loss
    on the answer positions only (``target_loss``), autocast to the hardware's dtype, AdamW."""
    from promptintern.train import target_loss

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for step in range(steps + 1):
        _sync(hw)
        t0 = time.perf_counter()
        with torch.autocast(hw.kind, dtype=hw.torch_dtype, enabled=hw.dtype != "fp32"):
            loss = target_loss(model, batch, share_prefix=False)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(hw)
        if step:
            times.append(time.perf_counter() - t0)
    return times


def step_times_hf_trainer(model, batch: dict, steps: int, hw) -> list[float]:
    """The same steps through a plain ``transformers.Trainer`` (its bf16 / fp16 autocast, AdamW, no
    logging or saving), timed per optimizer step by a callback; the first step left out."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.started = [], 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            _sync(hw)
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            _sync(hw)
            self.times.append(time.perf_counter() - self.started)

    rows = [{k: v[i] for k, v in batch.items()} for i in range(batch["input_ids"].shape[0])]
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=len(rows), max_steps=steps + 1,
                                 learning_rate=1e-4, bf16=hw.dtype == "bf16", fp16=hw.dtype == "fp16",
                                 use_cpu=hw.kind == "cpu", report_to=[], save_strategy="no", logging_strategy="no",
                                 dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=rows * (steps + 1), callbacks=[timer],
                          data_collator=lambda items: {k: torch.stack([it[k] for it in items]) for k in items[0]})
        trainer.train()
    return timer.times[1:]


def generate_7b_check(hw, batch: int = 16, prompt: int = 256, new: int = 64) -> dict:
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**{k: v for k, v in LLAMA_7B.items() if k != "architectures"})
    torch.cuda.reset_peak_memory_stats()
    with torch.device(hw.device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=hw.torch_dtype, attn_implementation=hw.attention()).eval()
    ids = torch.randint(0, cfg.vocab_size, (batch, prompt), device=hw.device)
    with torch.no_grad():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"batch": batch, "new_tokens": new, "tokens_s": round(batch * new / seconds, 1),
            "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1)}


def qlora_check(model_dir: Path, hw) -> dict:
    """A tiny stage on a 4-bit base (bitsandbytes), merged into the de-quantized base."""
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        return {"skipped": "bitsandbytes is not installed (pip install -e '.[gpu]')"}
    from promptintern.config import LoraSettings, TrainSettings
    from promptintern.datasets import Example, get_task
    from promptintern.merge import merge_adapter
    from promptintern.models import load_tokenizer
    from promptintern.schedule import StageSpec
    from promptintern.shards import write_shard
    from promptintern.train import train_stage

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = [Example(id=str(i), query=f"list files {i}", target=f"ls -la d{i}") for i in range(8)]
        write_shard(tmp / "shard.parquet", rows, rows, None, StageSpec(stage=1, tau=1.0, k=0), "Bash.",
                    get_task("nl2bash").format, load_tokenizer(model_dir))
        cfg = TrainSettings(epochs_per_stage=2, batch_size=4, lr=1e-2, quantize_base="4bit")
        report = train_stage(model_dir, tmp / "shard.parquet", tmp / "stage", LoraSettings(r=4, alpha=8),
                             cfg, stage=1, hardware=hw)
        check = merge_adapter(model_dir, tmp / "stage" / "adapter", tmp / "merged", hardware=hw, quantized=True)
    return {"loss": [round(report.first_loss, 3), round(report.final_loss, 3)], **check,
            "ok": check["max_abs_logit_diff"] <= check["tolerance"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-flow", action="store_true", help="leave out the tiny flow end to end (the slow part on a CPU)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON line here")
    args = ap.parse_args()
    started = time.perf_counter()
    hw = resolve("auto", "auto")
    hw.configure()
    from promptintern.models import build_tiny_model  # the tests' tiny model: built locally, no download

    model_dir = build_tiny_model(Path(tempfile.mkdtemp(prefix="gpu_check_")))
    result: dict = {"check": "gpu", "device": device_facts(hw)}
    result["shared_prefix"] = shared_prefix_check(model_dir, hw)
    result["prefix_cache"] = prefix_cache_check(model_dir, hw)
    result["memory"] = memory_check(hw)
    result["flow"] = {"skipped": "--skip-flow"} if args.skip_flow else flow_check()
    gpu_skip = {"skipped": "no CUDA GPU here: not yet measured on a GPU"}
    result["train_7b"] = train_7b_check(hw) if hw.kind == "cuda" else gpu_skip
    result["generate_7b"] = generate_7b_check(hw) if hw.kind == "cuda" else gpu_skip
    result["qlora"] = qlora_check(model_dir, hw) if hw.kind == "cuda" else gpu_skip
    result["wall_s"] = round(time.perf_counter() - started, 1)
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    line = json.dumps(result)
    print(line)
    if args.out:
        args.out.write_text(line + "\n")
    for key in ("shared_prefix", "prefix_cache", "memory", "flow", "train_7b", "generate_7b", "qlora"):
        value = result[key]
        text = value["skipped"] if "skipped" in value else ", ".join(f"{k} {v}" for k, v in value.items())
        print(f"{key:<14} {text}")
    print(f"device         {result['device']['resolved']}; {result['wall_s']} s in all")
    failed = [k for k in ("shared_prefix", "prefix_cache", "flow", "qlora") if result[k].get("ok") is False]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
