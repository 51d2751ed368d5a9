"""Device and dtype settings resolve to what the machine can do, and only what changes results
reaches cache keys (the GPU path's CPU-testable part; issue 19)."""

from __future__ import annotations

import pytest
import torch

from promptintern.device import DeviceError, Hardware, resolve


def test_auto_is_the_cpu_in_fp32_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    hw = resolve("auto", "auto")
    assert hw == Hardware("cpu", "fp32") and hw.torch_dtype is torch.float32
    assert hw.key_material() == {}  # the keys of every CPU run stay as they were
    assert hw.attention() == "sdpa" and not hw.needs_loss_scaling
    assert resolve("cpu", "bf16") == Hardware("cpu", "bf16")  # AVX512-BF16 CPUs: allowed, and keyed
    assert resolve("cpu", "bf16").key_material() == {"device": "cpu", "dtype": "bf16"}


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_a_gpu_is_bf16_where_it_has_it_else_loss_scaled_fp16(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    hw = resolve("auto", "auto")
    assert hw == Hardware("cuda", expected) and hw.needs_loss_scaling == (expected == "fp16")
    # which GPU does not change results: cuda:1 keys like cuda
    assert resolve("cuda:1", "auto").key_material() == hw.key_material() == {"device": "cuda", "dtype": expected}
    with pytest.raises(DeviceError, match=r"cuda:2.*2 CUDA GPU\(s\), cuda:0 \.\. cuda:1"):
        resolve("cuda:2")


def test_settings_this_machine_cannot_honour_say_which_and_what_to_use(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"device='cuda'.*no CUDA GPU.*use device=cpu or auto"):
        resolve("cuda")
    with pytest.raises(DeviceError, match=r"fp16.*CPU.*use fp32"):
        resolve("cpu", "fp16")
    with pytest.raises(DeviceError, match=r"device='gpu': allowed auto, cpu, cuda"):
        resolve("gpu")
    with pytest.raises(DeviceError, match=r"dtype='int4'"):
        resolve("cpu", "int4")


def test_tf32_is_turned_on_for_cuda_only(monkeypatch):
    before = torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        Hardware("cpu", "fp32").configure()
        assert torch.backends.cuda.matmul.allow_tf32 is False
        Hardware("cuda", "bf16").configure()
        assert torch.backends.cuda.matmul.allow_tf32 is True and torch.get_float32_matmul_precision() == "high"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before[0]
        torch.set_float32_matmul_precision(before[1])


def test_a_box_key_holds_the_device_kind_and_dtype_never_the_gpu_index():
    from tasks.caching import artifact_key

    def key(hardware):
        params = {"root": "/r", "model_dir": "models/x", "eval": {"batch_size": 8}}
        return artifact_key("evals", ("promptintern.generate",), {**params, **({"hardware": hardware}
                                                                                 if hardware is not None else {})})

    cpu = key({"device": "cpu", "dtype": "fp32"})
    assert cpu == key(None)  # the CPU in fp32: the keys boxes had before the setting
    assert key({"device": "cuda:0", "dtype": "bf16"}) == key({"device": "cuda:3", "dtype": "bf16"})
    assert len({cpu, key({"device": "cuda", "dtype": "bf16"}), key({"device": "cuda", "dtype": "fp16"}),
                key({"device": "cpu", "dtype": "bf16"})}) == 4


def test_the_hardware_settings_validate_by_key():
    from promptintern.config import ConfigError, preset

    assert preset("tiny").hardware.resolve() == resolve("auto", "auto")
    with pytest.raises(ConfigError, match=r"hardware.device='gpu0': allowed auto, cpu, cuda, cuda:<index>"):
        preset("tiny", {"hardware": {"device": "gpu0"}})
    with pytest.raises(ConfigError, match=r"hardware.dtype"):
        preset("tiny", {"hardware": {"dtype": "fp8"}})
    with pytest.raises(ConfigError, match=r"train.quantize_base='4bit' needs a CUDA GPU"):
        preset("tiny", {"hardware": {"device": "cpu"}, "train": {"quantize_base": "4bit"}})
    with pytest.raises(ConfigError, match=r"train.processes=2 with train.adaptive"):
        preset("tiny", {"train": {"processes": 2, "adaptive": {"dev_split": "dev"}}, "dataset": "nl2bash"})


def test_the_gpu_presets_carry_the_papers_recipe():
    from promptintern.config import preset

    for name in ("gpu-1b", "gpu-7b"):
        nl2bash, mbpp = preset(name), preset(name, {"dataset": "mbpp"})
        # NL2Bash: 12 epochs at an effective batch of 128; MBPP: 6 epochs at 16 (the paper's appendix)
        assert nl2bash.train.total_epochs == 12 and nl2bash.train.batch_size * nl2bash.train.grad_accum == 128
        assert mbpp.train.total_epochs == 6 and mbpp.train.batch_size * mbpp.train.grad_accum == 16
        assert (nl2bash.schedule.k0, mbpp.schedule.k0, nl2bash.lora.r) == (10, 5, 32)
        assert nl2bash.hardware.device == "auto" and nl2bash.train_subset is None
    assert preset("gpu-7b").train.gradient_checkpointing and preset("gpu-7b").model == "meta-llama/Llama-2-7b-hf"
    assert preset("gpu-7b", {"model": "/models/my-7b"}).model == "/models/my-7b"
