"""Merge a LoRA adapter into its base model, and prove the merge changed nothing.

``merge_adapter`` folds the adapter into the base weights (peft ``merge_and_unload``) and saves a
plain HF folder. Before saving it compares the merged model's logits with base+adapter logits on
a probe batch; a difference above ``atol + rtol * max |logit|`` raises, so a broken merge never
reaches the benchmark. The relative part: a merge sums W + BA in another order than base + adapter,
and fp32 rounding grows with the logits' size (after 26 passes over 64 NL2Bash rows: 1.1e-4 at
logits of ~30, against an adapter effect of ~10), while a broken merge is off by the adapter's
whole effect.
"""

from __future__ import annotations

from pathlib import Path

import torch

from promptintern.models import load_model, load_tokenizer

PROBE_TEXTS = (
    "Task: list all files in the current directory\nCommand:",
    "Write a python function to add two numbers.",
    "find . -name '*.py' | xargs wc -l",
)


def probe_batch(tokenizer, texts=PROBE_TEXTS) -> dict[str, torch.Tensor]:
    tokenizer.padding_side = "right"
    return tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)


@torch.no_grad()
def _logits(model, batch) -> torch.Tensor:
    return model(**batch).logits.float()


def merge_adapter(model_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path,
                  atol: float = 1e-4, hardware=None, quantized: bool = False, rtol: float = 1e-5) -> dict:
    """Merge, check on the probe batch, save to ``out_dir``; returns the check's numbers.

    The merge runs on the CPU in fp32 whatever the training hardware, so the check against base +
    adapter keeps its 1e-4 tolerance; the folder is then saved in the training dtype (``hardware``, a
    ``promptintern.device.Hardware``: bf16 weights for a bf16 run; None: fp32). ``quantized``: the
    adapter was trained on a 4-bit base (``train.quantize_base``), so it is merged into that base
    de-quantized (the weights it was trained against, not the original ones), and the check also
    reports how far the 4-bit forward with the adapter is from the merged model."""
    from peft import PeftModel

    tokenizer = load_tokenizer(model_dir)
    batch = probe_batch(tokenizer)
    mask = batch["attention_mask"].bool()
    check: dict = {}
    quantized_reference = None
    if quantized:
        base, quantized_reference = _dequantized_base(model_dir, hardware, adapter_dir, batch, mask)
    else:
        base = load_model(model_dir)
    peft_model = PeftModel.from_pretrained(base, str(adapter_dir))
    peft_model.eval()
    reference = _logits(peft_model, batch)[mask]
    with peft_model.disable_adapter():  # the base's own logits, without loading it twice
        base_diff = float((reference - _logits(peft_model, batch)[mask]).abs().max())
    merged = peft_model.merge_and_unload()
    merged.eval()
    got = _logits(merged, batch)[mask]
    max_diff = float((got - reference).abs().max())
    save_dtype = hardware.dtype if hardware is not None else "fp32"
    check |= {"probe_tokens": int(mask.sum()), "max_abs_logit_diff": max_diff,
              "adapter_effect_max_abs": base_diff, "atol": atol, "rtol": rtol,
              "tolerance": atol + rtol * float(reference.abs().max()), "saved_dtype": save_dtype}
    if quantized_reference is not None:  # information: rounding of the 4-bit forward, not a merge error
        check["quantized_forward_max_abs_diff"] = float((got - quantized_reference).abs().max())
    if not max_diff <= check["tolerance"]:
        raise RuntimeError(f"merged logits differ from base+adapter by {max_diff:.3g} > {check['tolerance']:.3g} "
                           f"(atol {atol} + rtol {rtol} x the largest logit): the merge is broken")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if save_dtype != "fp32":
        merged = merged.to(hardware.torch_dtype)
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return check


def _dequantized_base(model_dir, hardware, adapter_dir, batch, mask):
    """The 4-bit base de-quantized to fp32 on the CPU (the weights the adapter was trained against),
    and the 4-bit forward's logits with the adapter on the probe batch."""
    from peft import PeftModel

    quantized = load_model(model_dir, hardware, quantize="4bit")
    with_adapter = PeftModel.from_pretrained(quantized, str(adapter_dir))
    on_gpu = {k: v.to(quantized.device) for k, v in batch.items()}
    reference = _logits(with_adapter, on_gpu).cpu()[mask]
    base = with_adapter.unload().dequantize()  # NF4 -> the compute dtype (transformers' bnb quantizer)
    return base.to("cpu", dtype=torch.float32), reference
