"""The GPU-path settings of training, as far as a CPU can check them: a bf16 base under autocast,
gradient checkpointing, and data-parallel processes (gloo) against one process."""

import json
import os

import pytest
import torch

from promptintern.config import LoraSettings, TrainSettings
from promptintern.datasets import Example, get_task
from promptintern.device import Hardware
from promptintern.models import load_tokenizer
from promptintern.schedule import StageSpec
from promptintern.shards import write_shard
from promptintern.train import _lora_model, collate, encode_row, target_loss, train_stage

FORMAT = get_task("nl2bash").format
LORA = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj", "down_proj"))


def _shard(tmp_path, tok, n=12):
    rows = [Example(id=str(i), query=f"show the first {i} lines of log{i}.txt", target=f"head -n {i} log{i}.txt")
            for i in range(n)]
    path = tmp_path / "shard.parquet"
    write_shard(path, rows, rows, None, StageSpec(stage=1, tau=1.0, k=0), "Translate to bash.", FORMAT, tok)
    return path


def _adapter(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter" / "adapter_model.safetensors"))


def test_a_bf16_base_trains_fp32_lora_weights_under_autocast_close_to_fp32(tiny_model_dir, tmp_path):
    tok = load_tokenizer(tiny_model_dir)
    shard = _shard(tmp_path, tok)
    cfg = TrainSettings(epochs_per_stage=2, batch_size=4, lr=1e-2, checkpoint_every=100)
    fp32 = train_stage(tiny_model_dir, shard, tmp_path / "fp32", LORA, cfg, stage=1)
    bf16 = train_stage(tiny_model_dir, shard, tmp_path / "bf16", LORA, cfg, stage=1, hardware=Hardware("cpu", "bf16"))
    # the same rows, the same steps; the loss in bf16 matmuls is fp32's to bf16's ~3 significant digits
    assert bf16.optimizer_steps == fp32.optimizer_steps == 6 and bf16.tokens == fp32.tokens
    assert bf16.first_loss == pytest.approx(fp32.first_loss, rel=2e-2)
    assert bf16.final_loss == pytest.approx(fp32.final_loss, rel=2e-2)
    assert bf16.final_loss < bf16.first_loss - 0.1  # and it trains
    a, b = _adapter(tmp_path / "fp32"), _adapter(tmp_path / "bf16")
    assert all(t.dtype == torch.float32 for t in b.values())  # LoRA weights (and AdamW) stay fp32
    assert a.keys() == b.keys() and not all(torch.equal(a[k], b[k]) for k in a)  # bf16 really ran
    # the model under the bf16 run: base weights in bf16, LoRA weights fp32
    model = _lora_model(tiny_model_dir, LORA, None, 0, Hardware("cpu", "bf16"))
    dtypes = {p.dtype for n, p in model.named_parameters() if "lora_" not in n}
    assert dtypes == {torch.bfloat16}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    rows = [encode_row(tok, f"Translate to bash.\nQuery: count lines in f{i}\nCommand:", f"wc -l f{i}", 128)
            for i in range(3)]
    batch = collate(rows, tok.pad_token_id)

    def loss_and_grads(checkpointing: bool):
        model = _lora_model(tiny_model_dir, LORA, None, 0, gradient_checkpointing=checkpointing)
        model.train()
        loss = target_loss(model, batch, share_prefix=False)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain_loss, plain = loss_and_grads(False)
    ckpt_loss, ckpt = loss_and_grads(True)
    assert ckpt_loss == pytest.approx(plain_loss, abs=1e-6)
    assert plain.keys() == ckpt.keys() and any(g.abs().sum() > 0 for g in plain.values())
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-7)


def test_a_checkpointed_stage_trains_rows_whole_and_lands_where_a_plain_one_does(tiny_model_dir, tmp_path):
    tok = load_tokenizer(tiny_model_dir)
    shard = _shard(tmp_path, tok)
    plain = TrainSettings(epochs_per_stage=1, batch_size=4, lr=1e-2, checkpoint_every=100, share_prompt_prefix=False)
    train_stage(tiny_model_dir, shard, tmp_path / "plain", LORA, plain, stage=1)
    # share_prompt_prefix stays on in the settings: under checkpointing the trainer runs rows whole
    ckpt = plain.model_copy(update={"gradient_checkpointing": True, "share_prompt_prefix": True})
    train_stage(tiny_model_dir, shard, tmp_path / "ckpt", LORA, ckpt, stage=1)
    a, b = _adapter(tmp_path / "plain"), _adapter(tmp_path / "ckpt")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6)


def test_two_gloo_processes_train_the_adapter_one_process_trains(tiny_model_dir, tmp_path):
    """torchrun with 2 CPU processes (gloo), each half of every batch, gradients summed: the adapter of
    one process within 1e-5 (the order of floating-point sums differs). Batches of 5 rows split 3 + 2,
    with gradient accumulation, so unequal slices and the token-count weighting are exercised."""
    from promptintern.launch import train_stage_parallel

    tok = load_tokenizer(tiny_model_dir)
    shard = _shard(tmp_path, tok, n=20)
    one = TrainSettings(epochs_per_stage=1, batch_size=5, grad_accum=2, lr=1e-2, checkpoint_every=100)
    train_stage(tiny_model_dir, shard, tmp_path / "one", LORA, one, stage=1)
    steps = []
    report = train_stage_parallel(tiny_model_dir, shard, tmp_path / "two", LORA,
                                  one.model_copy(update={"processes": 2}), stage=1,
                                  on_step=lambda step, total, loss: steps.append(step))
    single = json.loads((tmp_path / "one" / "stats.json").read_text())
    assert report.optimizer_steps == single["optimizer_steps"] == 2 and steps == [1, 2]
    assert report.tokens == single["tokens"] and report.target_tokens == single["target_tokens"]
    assert report.final_loss == pytest.approx(single["final_loss"], rel=1e-5)
    a, b = _adapter(tmp_path / "one"), _adapter(tmp_path / "two")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-5)
    assert any(a[name].abs().sum() > 0 for name in a if "lora_B" in name)  # it trained


def test_a_failed_process_group_says_so(tiny_model_dir, tmp_path):
    from promptintern.launch import train_stage_parallel

    tok = load_tokenizer(tiny_model_dir)
    shard = _shard(tmp_path, tok, n=4)
    cfg = TrainSettings(epochs_per_stage=1, batch_size=2, processes=2)
    with pytest.raises(RuntimeError, match=r"data-parallel training failed \(torchrun exit"):
        train_stage_parallel(tmp_path / "no-such-model", shard, tmp_path / "bad", LORA, cfg, stage=1)
    assert not (tmp_path / "bad" / "adapter").exists()
