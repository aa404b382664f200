"""Choosing the device and dtype a command runs on (auto, cpu or cuda; float32, bfloat16 or float16)."""

from __future__ import annotations

import torch

from toolkit.errors import DeviceError, setting

DEVICE_CHOICES = ("auto", "cpu", "cuda")
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when a GPU is visible, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"{setting('device')} cuda was asked for but no CUDA GPU is visible; "
                f"use {setting('device')} cpu"
            )
        return torch.device("cuda")
    raise DeviceError(f"unknown device {name!r}; valid values: {', '.join(DEVICE_CHOICES)}")


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise DeviceError(f"unknown dtype {name!r}; valid values: {', '.join(DTYPES)}") from None


def rate_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype of the matmul whose rate a timing is compared with: ``dtype``, except float32 for
    half precision on the CPU, whose half-precision matmul is no meaningful reference."""
    return torch.float32 if device.type == "cpu" and dtype != torch.float32 else dtype


def half_on_cpu_notes(device: torch.device, dtype: torch.dtype) -> list[str]:
    """The one warning that half precision on the CPU measures an emulation (none otherwise)."""
    if device.type != "cpu" or dtype == torch.float32:
        return []
    name = str(dtype).removeprefix("torch.")
    return [
        f"{name} on the CPU: most of PyTorch's CPU kernels emulate it (convert to float32 and back), "
        f"so it is slower than float32 and says little about a GPU; use {setting('dtype')} float32 "
        f"on the CPU, or {setting('device')} cuda"
    ]


def device_name(device: torch.device) -> str:
    """A human-readable name: the GPU's model, or the CPU's model from /proc/cpuinfo."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
