import json

import torch

from promptintern.config import LoraSettings
from promptintern.merge import merge_adapter, probe_batch
from promptintern.models import load_model, load_tokenizer


def _random_adapter(model_dir, out_dir):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(load_model(model_dir), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # LoRA B starts at zero; make the adapter do something
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(out_dir)
    return out_dir


def test_merged_model_reproduces_base_plus_adapter_logits(tiny_model_dir, tmp_path):
    adapter = _random_adapter(tiny_model_dir, tmp_path / "adapter")
    check = merge_adapter(tiny_model_dir, adapter, tmp_path / "merged")
    assert check["max_abs_logit_diff"] <= 1e-4
    assert check["adapter_effect_max_abs"] > 1e-2  # the adapter really changes the logits
    # the saved folder loads as a plain model and gives the same logits again
    from peft import PeftModel

    tok = load_tokenizer(tiny_model_dir)
    batch = probe_batch(tok)
    with torch.no_grad():
        merged = load_model(tmp_path / "merged")(**batch).logits
        ref = PeftModel.from_pretrained(load_model(tiny_model_dir), str(adapter))(**batch).logits
    assert torch.allclose(merged, ref, atol=1e-4)
    assert not any("lora" in k for k in json.loads((tmp_path / "merged" / "config.json").read_text()))


def test_the_check_scales_with_the_logits_and_catches_a_merge_that_drops_the_adapter(tiny_model_dir, tmp_path,
                                                                                    monkeypatch):
    import pytest
    from peft.tuners.tuners_utils import BaseTuner

    adapter = _random_adapter(tiny_model_dir, tmp_path / "adapter")
    check = merge_adapter(tiny_model_dir, adapter, tmp_path / "merged")
    # rounding grows with the logits: the bound is atol + rtol x the largest |logit|
    assert check["tolerance"] > check["atol"] and check["max_abs_logit_diff"] <= check["tolerance"]
    assert check["tolerance"] < check["adapter_effect_max_abs"] / 10  # far below what a broken merge is off by
    monkeypatch.setattr(BaseTuner, "merge_and_unload", lambda self, *a, **k: self.unload())  # merges nothing
    with pytest.raises(RuntimeError, match="the merge is broken"):
        merge_adapter(tiny_model_dir, adapter, tmp_path / "broken")
    assert not (tmp_path / "broken").exists()
