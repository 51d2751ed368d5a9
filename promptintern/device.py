"""Where a model runs and in which number format: ``device`` and ``dtype`` settings, resolved once.

Every box that runs a model (train, merge, generate, the compressors) is given a resolved
``Hardware``: ``device: auto`` is CUDA when torch sees a GPU, else the CPU; ``dtype: auto`` is
bf16 on a GPU that has it (Ampere and later), fp16 (with loss scaling in training) on one that
does not, and fp32 on a CPU, where every published number of this project was made.

What changes results goes into cache keys and ``--resume``'s config digest: the device *kind*
(``cpu`` / ``cuda``) and the dtype, not which GPU index. The CPU in fp32 adds nothing to a key,
so the keys of every CPU run stay what they were before these settings existed.

Status: the resolution and its tests are here; the config keys and the boxes that take a
``Hardware`` land together (issue 19), so no setting exists that a box would ignore.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEVICES = "auto, cpu, cuda, cuda:<index>"
DTYPES = ("auto", "fp32", "bf16", "fp16")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class DeviceError(ValueError):
    """A device or dtype setting this machine cannot honour; the message names the setting."""


@dataclass(frozen=True)
class Hardware:
    """A resolved ``device`` / ``dtype`` pair."""

    device: str  # "cpu", "cuda" or "cuda:N": what torch is given
    dtype: str  # "fp32" | "bf16" | "fp16"

    @property
    def kind(self) -> str:
        return self.device.split(":")[0]

    @property
    def torch_dtype(self):
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.dtype]

    @property
    def needs_loss_scaling(self) -> bool:
        """fp16 gradients underflow without it; bf16 has fp32's exponent range and does not."""
        return self.dtype == "fp16"

    def key_material(self) -> dict:
        """What a cache key must hold of this: nothing for the CPU in fp32 (the keys every run made
        before there was a choice), else the device kind and the dtype (never the GPU index)."""
        return {} if (self.kind, self.dtype) == ("cpu", "fp32") else {"device": self.kind, "dtype": self.dtype}

    def attention(self) -> str:
        """The attention kernel to load the model with: FlashAttention 2 where it is installed and
        the dtype is half precision on CUDA, else PyTorch's SDPA (which picks its own fused kernel)."""
        if self.kind == "cuda" and self.dtype in ("bf16", "fp16"):
            import importlib.util

            if importlib.util.find_spec("flash_attn") is not None:
                return "flash_attention_2"
        return "sdpa"

    def configure(self) -> None:
        """Process-wide settings for this hardware: on CUDA, TF32 for the fp32 matmuls that remain
        (LoRA's, the loss): a 10-bit mantissa where the inputs were fp32, ~8x the fp32 rate."""
        if self.kind != "cuda":
            return
        import torch

        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")


def resolve(device: str = "auto", dtype: str = "auto") -> Hardware:
    """The ``Hardware`` the settings ``device`` and ``dtype`` mean on this machine."""
    import torch

    if not _DEVICE.fullmatch(device or ""):
        raise DeviceError(f"device={device!r}: allowed {DEVICES}")
    if dtype not in DTYPES:
        raise DeviceError(f"dtype={dtype!r}: allowed {', '.join(DTYPES)}")
    cuda = torch.cuda.is_available()
    if device == "auto":
        device = "cuda" if cuda else "cpu"
    if device.startswith("cuda"):
        if not cuda:
            raise DeviceError(f"device={device!r}, but torch sees no CUDA GPU (torch {torch.__version__}"
                              f"{', a CPU-only build' if torch.version.cuda is None else ''}); use device=cpu or auto")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                              f"cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    on_gpu = device.startswith("cuda")
    if dtype == "auto":
        dtype = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if on_gpu else "fp32"
    if dtype == "fp16" and not on_gpu:
        raise DeviceError("dtype='fp16' on the CPU: torch's CPU kernels for fp16 are slow or missing; use fp32 "
                          "(or bf16 on a CPU with AVX512-BF16 / AMX)")
    return Hardware(device, dtype)
