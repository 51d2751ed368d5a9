"""Device and dtype settings resolve to what the machine can do, and only what changes results
reaches cache keys (the GPU path's CPU-testable part; issue 19). The boxes do not take these
settings yet: ``promptintern.device`` is the piece they will be given."""

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
