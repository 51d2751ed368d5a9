"""The training memory estimate: exact parameter counts, activations as autograd really keeps them,
and a message that names what to change when a stage does not fit (issue 19's memory estimate)."""

from __future__ import annotations

import json

import pytest
import torch

from promptintern.memory import GB, MemoryEstimate, estimate_training, parameter_counts, shortfall

LORA = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def test_parameters_are_counted_exactly_without_loading_a_weight(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from promptintern.models import load_model

    model = load_model(tiny_model_dir)
    base = sum(p.numel() for p in model.parameters())
    layers_linear = sum(m.weight.numel() for m in model.get_decoder().modules() if type(m) is torch.nn.Linear)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                            target_modules=LORA["target_modules"], task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in peft.parameters() if p.requires_grad)
    assert parameter_counts(tiny_model_dir, LORA) == {"total": base, "trainable": trainable,
                                                      "quantizable": layers_linear}
    est = estimate_training(tiny_model_dir, LORA, batch_size=4, seq_len=128, answer_tokens=20)
    assert est.weights == base * 4 and est.trainable == trainable * 16  # fp32 weight, grad, two moments


def test_a_7b_shaped_model_is_estimated_on_the_meta_device(tmp_path):
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
              "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(config))
    est = estimate_training(tmp_path, {**LORA, "r": 32}, batch_size=1, seq_len=512, answer_tokens=64, dtype="bf16",
                            device="cuda")
    assert est.detail["parameters"] == 6_738_415_616  # Llama-2-7B
    assert est.detail["lora_parameters"] == 4 * 32 * (4096 + 4096) * 32
    assert abs(est.weights / GB - 12.55) < 0.01
    # activations scale with the batch and (fused attention) linearly with the length
    two = estimate_training(tmp_path, {**LORA, "r": 32}, batch_size=2, seq_len=1024, answer_tokens=64, dtype="bf16",
                            device="cuda")
    assert two.activations == pytest.approx(4 * est.activations, rel=1e-6)
    eager = estimate_training(tmp_path, {**LORA, "r": 32}, batch_size=2, seq_len=1024, answer_tokens=64,
                              dtype="bf16", device="cuda", attention="eager")
    assert eager.activations > two.activations  # the attention probabilities, quadratic in the length


def test_checkpointing_and_a_4bit_base_shrink_what_they_should_and_the_shortfall_names_them(tmp_path):
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
              "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(config))
    lora = {**LORA, "r": 32}
    plain = estimate_training(tmp_path, lora, batch_size=8, seq_len=2048, answer_tokens=64, dtype="bf16",
                              device="cuda")
    # an 80 GB GPU: ~212 GB of activations -> checkpointing; the 12.6 GB of weights are not the problem
    problem = shortfall(plain, 80 * GB)
    assert "lower set train.gradient_checkpointing=true" in problem and "quantize_base" not in problem
    # a 24 GB GPU: checkpointing first, then the 4-bit base (the weights are half the GPU)
    problem = shortfall(plain, 24 * GB)
    assert problem.index("gradient_checkpointing") < problem.index("train.quantize_base=4bit")
    ckpt = estimate_training(tmp_path, lora, batch_size=8, seq_len=2048, answer_tokens=64, dtype="bf16",
                             device="cuda", gradient_checkpointing=True)
    # each of the 32 layers keeps its bf16 input (8 x 2048 x 4096 x 2 bytes), plus one layer's whole set
    assert ckpt.activations == pytest.approx(32 * 8 * 2048 * 4096 * 2 + plain.activations / 32, rel=1e-6)
    assert ckpt.activations < plain.activations / 5 and ckpt.weights == plain.weights
    q = estimate_training(tmp_path, lora, batch_size=8, seq_len=2048, answer_tokens=64, dtype="bf16",
                          device="cuda", gradient_checkpointing=True, quantize="4bit")
    quantized = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)  # q k v o, gate up down in every layer
    assert q.weights == pytest.approx((6_738_415_616 - quantized) * 2 + quantized * (4 + 0.127) / 8, rel=1e-6)
    assert 3.5 < q.weights / GB < 3.7 and q.activations == ckpt.activations
    # weights that do not fit at all in bf16: the 4-bit base is the first thing to try
    assert shortfall(plain, 10 * GB).startswith("a training step needs") and \
        "set train.quantize_base=4bit" in shortfall(plain, 10 * GB)


def test_one_layers_activations_match_what_autograd_keeps_on_a_real_run(tiny_model_dir):
    """The estimate's per-layer cost (measured on the meta device) against the bytes autograd keeps
    in a real CPU forward pass of a 1- and a 2-layer model, at a batch and length it never probed."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    config = json.loads((tiny_model_dir / "config.json").read_text())
    batch, length = 3, 96

    def kept(layers: int) -> int:
        cfg = AutoConfig.from_pretrained(tiny_model_dir, num_hidden_layers=layers)
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_config(cfg),
                               LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                          target_modules=LORA["target_modules"], task_type="CAUSAL_LM"))
        model.train()
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen = {}

        def pack(t):
            if t.untyped_storage().data_ptr() not in params:
                seen[(t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())] = \
                    t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=torch.randint(0, config["vocab_size"], (batch, length)), logits_to_keep=1)
        return sum(seen.values())

    measured = kept(2) - kept(1)
    est = estimate_training(tiny_model_dir, LORA, batch_size=batch, seq_len=length)
    estimated = est.activations / est.detail["layers"]
    assert estimated == pytest.approx(measured, rel=0.05)


def test_a_stage_that_does_not_fit_says_by_how_much_and_what_to_lower():
    est = MemoryEstimate(weights=2 * GB, trainable=GB // 10, activations=6 * GB, logits=GB, overhead=GB // 2,
                         detail={"batch_size": 4, "seq_len": 2048})
    assert shortfall(est, 16 * GB) is None and shortfall(est, None) is None
    message = shortfall(est, 4 * GB)
    assert "~9.60 GB" in message and "4.00 GB is available" in message
    assert "train.batch_size" in message and "1.75 GB a row" in message and "train.max_seq_len (now 2048" in message
    assert "a smaller model" in shortfall(est, GB)  # the weights alone do not fit


def test_a_prefix_the_trainer_runs_once_is_counted_once(tiny_model_dir):
    """train.share_prompt_prefix runs the template once per batch: its activations count for one row."""
    plain = estimate_training(tiny_model_dir, LORA, batch_size=4, seq_len=200)
    shared = estimate_training(tiny_model_dir, LORA, batch_size=4, seq_len=200, shared_prefix=150)
    assert shared.activations == pytest.approx(plain.activations * (150 + 4 * 50) / (4 * 200), rel=1e-6)
    assert shared.detail["shared_prefix"] == 150
    alone = estimate_training(tiny_model_dir, LORA, batch_size=1, seq_len=200, shared_prefix=150)
    assert alone.detail["shared_prefix"] == 0  # one row shares nothing
