"""Benchmark LoRA stage training: our ``train_stage`` against a plain Hugging Face ``Trainer``.

Both sides train the same model, LoRA config (``LoraSettings()``), rows, batch size, LR schedule
and step count (one epoch over ``--rows`` rows of a stage shard the pipeline built; the default
is the stage-1 shard under ``artifacts/shards/``: full template + k shots, the long prompts). The
baseline is what a user would write first: ``Trainer`` + ``DataCollatorForSeq2Seq`` padded
batches in random order (no length grouping), the full-vocabulary LM loss, fp32. Repeats are
interleaved (A B, B A, ...) on a noisy machine; medians and the ratio are reported. Training must
not change: each side's trained adapter is scored by one function on the same rows afterwards
(eval mode, target tokens), and the two losses must agree within noise (the sides see the rows in
different batches, and draw different dropout). Also run: our trainer with a lever switched off.
Prints one JSON line, then a short table.

    python benchmarks/bench_train.py                      # SmolLM2-135M, 8 rows, 2 repeats
    python benchmarks/bench_train.py --model tiny --rows 8 --repeats 1   # smoke run, seconds

Files read: ``artifacts/models/<key>/`` (the converted SmolLM2; converted into a temp folder
when absent), ``artifacts/shards/<key>/shard.parquet`` (columns prompt, target; see
``promptintern.shards``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's promptintern and benchmarks.common, installed or not

import pyarrow.parquet as pq
import torch

from benchmarks.common import cpu_flags, cpu_model  # noqa: F401  (bench_inference imports them from here)
from promptintern.config import LoraSettings, TrainSettings
from promptintern.cpu import set_torch_threads
from promptintern.models import load_model, load_tokenizer, prepare_model
from promptintern.shards import read_shard, shard_stats
from promptintern.train import IGNORE_INDEX, collate, encode_row, target_loss, train_stage


def resolve_model(spec: str, scratch: Path) -> Path:
    """A local model folder for ``spec``: the pipeline's converted copy when there is one."""
    if (Path(spec) / "config.json").is_file():
        return Path(spec)
    for manifest in sorted((ROOT / "artifacts" / "models").glob("*/manifest.json")):
        fingerprint = json.loads(manifest.read_text()).get("inputs", {}).get("fingerprint", "")
        if fingerprint.split("@")[0] == spec:
            return manifest.parent
    return prepare_model(spec, scratch / "model")


def default_shard() -> Path:
    """The pipeline's stage-1 shard with the longest prompts."""
    shards = [(shard_stats(p).get("stage", {}).get("stage"), shard_stats(p).get("mean_prompt_tokens", 0), p)
              for p in (ROOT / "artifacts" / "shards").glob("*/shard.parquet")]
    shards = [s for s in shards if s[0] == 1]
    if not shards:
        sys.exit("no stage-1 shard under artifacts/shards: run the flow once or pass --shard")
    return max(shards)[2]


@torch.no_grad()
def eval_loss(model, encoded, pad_id: int, batch_size: int) -> float:
    """Target-token-weighted mean loss over the rows in a fixed order, eval mode (no dropout): one
    function for both sides' trained adapters, so their training can be compared."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        batch = collate(encoded[start : start + batch_size], pad_id)
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += float(target_loss(model, batch)) * n
        count += n
    return total / count


def hf_trainer_run(model_dir: Path, encoded, lora: LoraSettings, cfg: TrainSettings, out: Path) -> dict:
    """The baseline: Trainer, padded random-order batches, full LM loss."""
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, PrinterCallback, Trainer, TrainingArguments

    tokenizer = load_tokenizer(model_dir)
    torch.manual_seed(cfg.seed)
    model = get_peft_model(load_model(model_dir), LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))
    rows = [{"input_ids": ids, "labels": lab, "attention_mask": [1] * len(ids)} for ids, lab in encoded]
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    padded = [0]

    def counting_collator(features):
        batch = collator(features)
        padded[0] += batch["input_ids"].numel()
        return batch

    steps = math.ceil(len(rows) / cfg.batch_size)
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=cfg.batch_size, num_train_epochs=1,
        learning_rate=cfg.lr, warmup_steps=math.ceil(cfg.warmup_ratio * steps), lr_scheduler_type="linear",
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=True, seed=cfg.seed, data_seed=cfg.seed,
        dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=counting_collator)
    trainer.remove_callback(PrinterCallback)  # keep stdout to our one JSON line and table
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"seconds": seconds, "eval_loss": eval_loss(model, encoded, tokenizer.pad_token_id, cfg.batch_size),
            "tokens": sum(len(ids) for ids, _ in encoded),
            "target_tokens": sum(sum(t != IGNORE_INDEX for t in lab) for _, lab in encoded),
            "padded_tokens": padded[0], "steps": trainer.state.global_step,
            "mean_loss": statistics.mean(losses), "final_loss": losses[-1]}


def ours_run(model_dir: Path, shard: Path, lora: LoraSettings, cfg: TrainSettings, out: Path, encoded) -> dict:
    from peft import PeftModel

    report = train_stage(model_dir, shard, out, lora, cfg, stage=1)
    trained = PeftModel.from_pretrained(load_model(model_dir), str(out / "adapter"))
    pad_id = load_tokenizer(model_dir).pad_token_id
    return {"seconds": report.seconds, "eval_loss": eval_loss(trained, encoded, pad_id, cfg.batch_size),
            "tokens": report.tokens, "target_tokens": report.target_tokens,
            "padded_tokens": report.padded_tokens, "steps": report.optimizer_steps,
            "mean_loss": report.mean_loss, "final_loss": report.final_loss}


# Our trainer with levers switched off, to see what each one buys.
SIDES = {"ours": {}, "ours_no_prefix_share": {"share_prompt_prefix": False}, "hf_trainer": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="smollm2-135m, tiny, or a model folder")
    ap.add_argument("--shard", type=Path, help="a stage shard (default: the pipeline's stage-1 shard)")
    ap.add_argument("--rows", type=int, default=8, help="first N shard rows: one epoch over them")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved A/B pairs (median reported)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sides", default="ours,ours_no_prefix_share,hf_trainer",
                    help=f"comma-separated, from {', '.join(SIDES)}; 'ours' and 'hf_trainer' are required")
    args = ap.parse_args()

    set_torch_threads()
    scratch = Path(tempfile.mkdtemp(prefix="bench_train_"))
    model_dir = resolve_model(args.model, scratch)
    shard = args.shard or default_shard()
    table = read_shard(shard).slice(0, args.rows)
    sub_shard = scratch / "shard.parquet"
    pq.write_table(table, sub_shard)
    lora = LoraSettings()
    # warmup as the pipeline's default (5%), no checkpoints inside the timed run
    cfg = TrainSettings(batch_size=args.batch_size, seed=args.seed, checkpoint_every=10**6)
    tokenizer = load_tokenizer(model_dir)
    encoded = [encode_row(tokenizer, p, t, cfg.max_seq_len)
               for p, t in zip(table.column("prompt").to_pylist(), table.column("target").to_pylist())]

    sides = args.sides.split(",")
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for r in range(args.repeats):
        order = sides if r % 2 == 0 else sides[::-1]
        for side in order:
            out = scratch / f"{side}-{r}"
            if side == "hf_trainer":
                run = hf_trainer_run(model_dir, encoded, lora, cfg, out)
            else:  # ours, or ours with one lever off
                run = ours_run(model_dir, sub_shard, lora, cfg.model_copy(update=SIDES[side]), out, encoded)
            run["load_avg_1m"] = round(os.getloadavg()[0], 2)
            runs[side].append(run)
            print(f"# {side} repeat {r}: {run['tokens'] / run['seconds']:.1f} tok/s, "
                  f"loss {run['mean_loss']:.4f}, eval loss after {run['eval_loss']:.4f}, load {run['load_avg_1m']}", file=sys.stderr)

    def med(side: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[side])

    def rate(side: str, key: str) -> float:
        return statistics.median(run[key] / run["seconds"] for run in runs[side])

    import peft
    import transformers

    summary = {
        side: {"tokens_per_s": round(rate(side, "tokens"), 2),
               "target_tokens_per_s": round(rate(side, "target_tokens"), 3),
               "seconds_median": round(med(side, "seconds"), 2),
               "seconds_all": [round(run["seconds"], 2) for run in runs[side]],
               "padding_fraction": round(1 - runs[side][0]["tokens"] / runs[side][0]["padded_tokens"], 4),
               "steps": runs[side][0]["steps"],
               "mean_loss_median": round(med(side, "mean_loss"), 4),
               "final_loss_median": round(med(side, "final_loss"), 4),
               "eval_loss_after_median": round(med(side, "eval_loss"), 4),
               "load_avg_1m": [run["load_avg_1m"] for run in runs[side]]}
        for side in runs
    }
    speedup = summary["ours"]["tokens_per_s"] / summary["hf_trainer"]["tokens_per_s"]
    result = {
        "bench": "train", "speedup_tokens_per_s": round(speedup, 3),
        "vs_hf_trainer": {s: round(summary[s]["tokens_per_s"] / summary["hf_trainer"]["tokens_per_s"], 3) for s in sides},
        **summary,
        "eval_loss_rel_diff": round(abs(summary["ours"]["eval_loss_after_median"] / summary["hf_trainer"]["eval_loss_after_median"] - 1), 4),
        "model": model_dir.name if args.model not in ("tiny", "smollm2-135m") else args.model,
        "model_dir": str(model_dir), "shard": str(shard), "rows": len(encoded), "batch_size": args.batch_size,
        "mean_row_tokens": round(sum(len(i) for i, _ in encoded) / len(encoded), 1),
        "lora": lora.model_dump(), "lr": cfg.lr, "seed": args.seed, "repeats": args.repeats,
        "cpu": cpu_model(), "cpu_flags_avx512_amx": cpu_flags(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "transformers": transformers.__version__, "peft": peft.__version__,
    }
    print(json.dumps(result))
    base = summary["hf_trainer"]["tokens_per_s"]
    table = [("", *sides),
             ("tokens/s (median)", *(f"{summary[s]['tokens_per_s']:.1f}" for s in sides)),
             ("target tokens/s", *(f"{summary[s]['target_tokens_per_s']:.2f}" for s in sides)),
             ("seconds (median)", *(f"{summary[s]['seconds_median']:.1f}" for s in sides)),
             ("padding", *(f"{summary[s]['padding_fraction']:.1%}" for s in sides)),
             ("mean train loss", *(f"{summary[s]['mean_loss_median']:.4f}" for s in sides)),
             ("loss after (eval)", *(f"{summary[s]['eval_loss_after_median']:.4f}" for s in sides)),
             ("vs HF Trainer", *(f"{summary[s]['tokens_per_s'] / base:.2f}x" for s in sides))]
    for name, *cells in table:
        print(f"{name:<18}" + "".join(f"  {c:>20}" for c in cells))


if __name__ == "__main__":
    main()
