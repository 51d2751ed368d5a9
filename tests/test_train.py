import json

import pyarrow.parquet as pq
import pytest
import torch

from promptintern.config import LoraSettings, TrainSettings
from promptintern.models import load_tokenizer
from promptintern.schedule import StageSpec
from promptintern.shards import write_shard
from promptintern.datasets import Example, get_task
from promptintern.train import IGNORE_INDEX, collate, encode_row, plan_batches, target_loss, train_stage

FORMAT = get_task("nl2bash").format

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA = LoraSettings(r=8, alpha=16, dropout=0.0, target_modules=ALL_LINEAR)


def test_encode_row_masks_every_prompt_token(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    prompt, target = "Task: list files\nCommand:", " ls -la"
    ids, labels = encode_row(tok, prompt, target, max_seq_len=512)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert labels[-1] == tok.eos_token_id
    assert tok.decode(ids[n_prompt:-1]) == target


def test_encode_row_truncates_the_prompt_from_the_left(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    prompt = "word " * 300 + "Task: the query\nCommand:"
    ids, labels = encode_row(tok, prompt, " ls", max_seq_len=64)
    assert len(ids) == 64
    assert tok.decode(ids).endswith("Task: the query\nCommand: ls<|endoftext|>")
    with pytest.raises(ValueError, match="max_seq_len"):
        encode_row(tok, prompt, " ls" * 100, max_seq_len=16)


def test_collate_pads_with_ignored_labels():
    batch = collate([([1, 2, 3], [-100, 2, 3]), ([4], [4])], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_target_loss_equals_the_full_lm_loss(tiny_model_dir):
    from promptintern.models import load_model

    tok = load_tokenizer(tiny_model_dir)
    rows = [encode_row(tok, f"Task: query number {i}\nCommand:", f" ls -{'l' * (i + 1)}", 128) for i in range(3)]
    batch = collate(rows, tok.pad_token_id)
    model = load_model(tiny_model_dir)
    with torch.no_grad():
        assert torch.allclose(target_loss(model, batch), model(**batch).loss, atol=1e-5)



def test_shared_prefix_runs_once_with_the_same_loss_and_gradients(tiny_model_dir):
    """Rows that share a template: the prefix pass runs once per batch, loss and LoRA gradients
    equal the unshared computation's; the prefix stops short of every row's first target."""
    from peft import LoraConfig, get_peft_model

    from promptintern.models import load_model
    from promptintern.train import shared_prefix_len

    tok = load_tokenizer(tiny_model_dir)
    template = "Translate the request into one bash command. Quote paths, prefer find -print0. " * 3
    rows = [encode_row(tok, template + f"Task: {q}\nCommand:", t, 512)
            for q, t in [("list files", " ls -la"), ("count lines in a.txt", " wc -l a.txt"), ("x", " echo hi there")]]
    batch = collate(rows, tok.pad_token_id)
    n = shared_prefix_len(batch)
    n_template = len(tok(template, add_special_tokens=False)["input_ids"])
    assert n_template - 2 <= n < min(lab.index(next(t for t in lab if t != IGNORE_INDEX)) for _, lab in rows)
    assert shared_prefix_len(collate(rows[:1], tok.pad_token_id)) == 0  # one row: nothing to share

    torch.manual_seed(0)
    model = get_peft_model(load_model(tiny_model_dir), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for p in model.parameters():  # LoRA B starts at zero: make the adapter do something
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = {}
    for share in (True, False):
        loss = target_loss(model, batch, share_prefix=share)
        grads[share] = (loss.detach(), torch.autograd.grad(loss, params))
    assert torch.allclose(grads[True][0], grads[False][0], atol=1e-5)
    assert torch.allclose(grads[True][0], model(**batch).loss.detach(), atol=1e-5)
    for a, b in zip(grads[True][1], grads[False][1]):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)

def test_plan_batches_covers_every_row_once_per_epoch_and_groups_lengths():
    lengths = [5, 500, 7, 480, 6, 510, 8, 490]
    batches = plan_batches(lengths, batch_size=2, epochs=2, seed=1)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == sorted(list(range(8)) * 2)
    assert all(abs(lengths[b[0]] - lengths[b[-1]]) < 100 for b in batches)  # short with short
    assert plan_batches(lengths, 2, 2, seed=1) == batches  # deterministic
    assert len(plan_batches(lengths, 2, 1.5, seed=1)) == 6


def _shard(tmp_path, tok, rows, k=0):
    path = tmp_path / "shard.parquet"
    write_shard(path, rows, rows, None, StageSpec(stage=1, tau=1.0, k=k), "Translate to bash.", FORMAT, tok)
    return path


def test_stage_training_lowers_the_loss_and_carries_the_adapter(tiny_model_dir, tmp_path):
    tok = load_tokenizer(tiny_model_dir)
    rows = [Example(id=str(i), query=f"list files {i}", target="ls -la") for i in range(8)]
    shard = _shard(tmp_path, tok, rows)
    cfg = TrainSettings(epochs_per_stage=8, batch_size=4, lr=1e-2, checkpoint_every=100)
    first = train_stage(tiny_model_dir, shard, tmp_path / "s1", LORA, cfg, stage=1)
    assert first.optimizer_steps == 16
    assert first.final_loss < first.first_loss - 1.0
    assert first.target_tokens < first.tokens  # the prompt tokens were not targets
    second = train_stage(tiny_model_dir, shard, tmp_path / "s2", LORA, cfg, stage=2,
                         init_adapter=tmp_path / "s1" / "adapter")
    # stage 2 starts where stage 1 ended: its first loss is close to stage 1's last, not its first
    assert second.first_loss < first.first_loss - 1.0
    log = [json.loads(l) for l in (tmp_path / "s1" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, 17))
    assert not (tmp_path / "s1" / "checkpoint").exists()


def test_training_resumes_from_a_checkpoint_to_the_same_adapter(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    tok = load_tokenizer(tiny_model_dir)
    rows = [Example(id=str(i), query=f"show file {i}", target=f"cat f{i}.txt") for i in range(8)]
    shard = _shard(tmp_path, tok, rows)
    cfg = TrainSettings(epochs_per_stage=2, batch_size=2, lr=1e-3, checkpoint_every=3)
    lora = LoraSettings(r=4, alpha=8, dropout=0.1)  # dropout: the RNG state must be restored too
    train_stage(tiny_model_dir, shard, tmp_path / "full", lora, cfg, stage=1)

    calls = []

    def crash_after_five(step, total, loss):
        calls.append(step)
        if step == 5:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        train_stage(tiny_model_dir, shard, tmp_path / "resumed", lora, cfg, stage=1, on_step=crash_after_five)
    assert (tmp_path / "resumed" / "checkpoint").is_dir()
    report = train_stage(tiny_model_dir, shard, tmp_path / "resumed", lora, cfg, stage=1)
    assert report.resumed_from_step == 3
    a = load_file(str(tmp_path / "full" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _adapter(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter" / "adapter_model.safetensors"))


def test_one_optimizer_across_stages_is_one_run_split_in_two(tiny_model_dir, tmp_path):
    """``reset_optimizer_each_stage: false`` does what it says: two stages of 3 steps with the AdamW
    state and the LR schedule carried on give the adapter of one 6-step stage (full batches, so the
    order of rows cannot differ), and resetting the optimizer gives another."""
    from promptintern.curriculum import StagePlan, plan_stages

    tok = load_tokenizer(tiny_model_dir)
    rows = [Example(id=str(i), query=f"list files {i}", target=f"ls -l d{i}") for i in range(4)]
    shard = _shard(tmp_path, tok, rows)
    cfg = TrainSettings(batch_size=4, lr=1e-2, warmup_ratio=0.2, checkpoint_every=100, epochs_per_stage=3,
                        reset_optimizer_each_stage=False, lr_schedule="wsd", decay_ratio=0.5)
    one = train_stage(tiny_model_dir, shard, tmp_path / "one", LORA, cfg, stage=1,
                      plan=StagePlan(stage=1, steps=6, schedule_steps=6))
    first, second = plan_stages(2, cfg, rows=4)
    assert (first.steps, second.step_offset, second.carry_optimizer) == (3, 3, True)
    train_stage(tiny_model_dir, shard, tmp_path / "a", LORA, cfg, stage=1, plan=first)
    assert (tmp_path / "a" / "optimizer.pt").is_file()
    split = train_stage(tiny_model_dir, shard, tmp_path / "b", LORA, cfg, stage=2,
                        init_adapter=tmp_path / "a" / "adapter", plan=second)
    assert split.carried_optimizer and one.optimizer_steps == 6
    whole, halves = _adapter(tmp_path / "one"), _adapter(tmp_path / "b")
    for name in whole:
        torch.testing.assert_close(halves[name], whole[name], rtol=1e-4, atol=1e-6)
    lrs = [json.loads(line)["lr"] for p in ("a", "b") for line in (tmp_path / p / "log.jsonl").read_text().splitlines()]
    assert lrs == [json.loads(line)["lr"] for line in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]

    reset = cfg.model_copy(update={"reset_optimizer_each_stage": True})
    first, second = plan_stages(2, reset, rows=4)
    train_stage(tiny_model_dir, shard, tmp_path / "c", LORA, reset, stage=1, plan=first)
    assert not (tmp_path / "c" / "optimizer.pt").exists()
    restarted = train_stage(tiny_model_dir, shard, tmp_path / "d", LORA, reset, stage=2,
                            init_adapter=tmp_path / "c" / "adapter", plan=second)
    assert not restarted.carried_optimizer
    assert restarted.first_lr == pytest.approx(1e-2)  # its own one-step warm-up: at the peak, never 0
    differs = _adapter(tmp_path / "d")
    assert any(not torch.allclose(differs[name], whole[name], rtol=1e-3, atol=1e-5) for name in whole)


def test_carrying_an_optimizer_that_was_not_kept_is_an_error(tiny_model_dir, tmp_path):
    from promptintern.curriculum import StagePlan

    tok = load_tokenizer(tiny_model_dir)
    rows = [Example(id=str(i), query=f"q {i}", target="ls") for i in range(4)]
    shard = _shard(tmp_path, tok, rows)
    cfg = TrainSettings(batch_size=4, checkpoint_every=100)
    train_stage(tiny_model_dir, shard, tmp_path / "a", LORA, cfg, stage=1)
    with pytest.raises(ValueError, match="reset_optimizer_each_stage=false"):
        train_stage(tiny_model_dir, shard, tmp_path / "b", LORA, cfg, stage=2, init_adapter=tmp_path / "a" / "adapter",
                    plan=StagePlan(stage=2, steps=1, step_offset=1, schedule_steps=2, carry_optimizer=True))


def test_a_stage_ends_when_its_probe_stops_improving(tiny_model_dir, tmp_path):
    """Adaptive stage lengths on a synthetic metric curve: probed every 2 steps, the scores rise,
    then fall twice (patience 2): the stage stops at the fourth probe, step 8 of 20 planned."""
    from promptintern.curriculum import StagePlan, StageProbe

    tok = load_tokenizer(tiny_model_dir)
    rows = [Example(id=str(i), query=f"q {i}", target="ls") for i in range(8)]
    shard = _shard(tmp_path, tok, rows)
    curve = iter([1.0, 2.0, 1.5, 1.9, 3.0, 4.0])
    seen = []

    def score(model):
        assert not model.training  # probed in eval mode
        seen.append(True)
        return next(curve)

    cfg = TrainSettings(batch_size=4, checkpoint_every=100)
    report = train_stage(tiny_model_dir, shard, tmp_path / "s", LORA, cfg, stage=1,
                         plan=StagePlan(stage=1, steps=20, schedule_steps=20),
                         probe=StageProbe(score=score, every=2, patience=2, min_steps=2))
    assert report.advanced_early and report.optimizer_steps == 8 and report.planned_steps == 20
    assert [p["step"] for p in report.probe] == [2, 4, 6, 8] and len(seen) == 4
    stats = json.loads((tmp_path / "s" / "stats.json").read_text())
    assert stats["optimizer_steps"] == 8 and stats["advanced_early"]
    assert (tmp_path / "s" / "adapter" / "adapter_model.safetensors").is_file()


def test_a_saved_adapter_is_the_same_bytes_wherever_and_whenever_it_is_made(tmp_path):
    """PEFT writes the base model's absolute path and a set's order (which follows the process's
    string hashing): make_portable names the base by its folder in the root and sorts the modules."""
    import json

    from promptintern.train import make_portable

    root = tmp_path / "somewhere" / "artifacts"
    adapter = root / "adapters" / "k1" / "adapter"
    adapter.mkdir(parents=True)
    model = root / "models" / "abc123"
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": str(model), "target_modules": ["v_proj", "q_proj", "o_proj", "k_proj"], "r": 4}))
    (adapter / "README.md").write_text(f"---\nbase_model: {model}\ntags:\n- base_model:adapter:{model}\n---\n")
    make_portable(adapter, model)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config == {"base_model_name_or_path": "models/abc123", "r": 4,
                      "target_modules": ["k_proj", "o_proj", "q_proj", "v_proj"]}
    assert str(root) not in (adapter / "README.md").read_text() and "base_model: models/abc123" in (adapter / "README.md").read_text()
    first = (adapter / "adapter_config.json").read_bytes()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "r": 4, "base_model_name_or_path": str(model)}))
    make_portable(adapter, model)
    assert (adapter / "adapter_config.json").read_bytes() == first


def test_rows_cut_to_max_seq_len_are_counted_and_said(tiny_model_dir, tmp_path, caplog):
    """A row longer than train.max_seq_len loses prompt tokens from the left: deliberate, so a
    counted warning (in the stage's stats and the log), never silent."""
    tok = load_tokenizer(tiny_model_dir)
    rows = [Example(id=str(i), query=("list files " * (1 + 30 * (i % 2))) + str(i), target="ls -la") for i in range(8)]
    shard = _shard(tmp_path, tok, rows)
    lengths = sorted(len(tok(p, add_special_tokens=False)["input_ids"]) for p in
                     pq.read_table(shard).column("prompt").to_pylist())
    limit = (lengths[0] + lengths[-1]) // 2 + 4  # the short rows fit, the long ones do not
    cfg = TrainSettings(epochs_per_stage=1, batch_size=4, lr=1e-3, checkpoint_every=100, max_seq_len=limit)
    with caplog.at_level("WARNING"):
        report = train_stage(tiny_model_dir, shard, tmp_path / "s1", LORA, cfg, stage=1)
    assert report.rows_truncated == 4 and report.longest_row_tokens > limit
    stats = json.loads((tmp_path / "s1" / "stats.json").read_text())
    assert stats["rows_truncated"] == 4
    assert f"4 of 8 rows are longer than train.max_seq_len={limit}" in caplog.text


def test_a_prompt_that_does_not_fit_the_context_is_an_error_with_the_numbers(tiny_model_dir):
    from promptintern.pipeline import check_prompts_fit

    check_prompts_fit(["list files"], tiny_model_dir, 16, "benchmark 'x'")
    long = "list the files " * 1200  # the tiny model's context is 2,048 tokens
    with pytest.raises(ValueError, match=r"benchmark 'x': 1 of 2 prompts do not fit the model's context: the longest "
                                         r"is \d+ tokens \+ eval.max_new_tokens=16 > 2048 .*Lower schedule.k0"):
        check_prompts_fit(["list files", long], tiny_model_dir, 16, "benchmark 'x'")
