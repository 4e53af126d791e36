"""Device and dtype choice: cuda > mps > cpu unless the user says otherwise."""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def available_devices() -> list[str]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())] + devices
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.insert(0, "mps")
    return devices


def pick_device(requested: str | None = "auto") -> str:
    """Return the device to use; ``auto`` prefers cuda, then mps, then cpu."""
    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    base = requested.split(":")[0]
    if base == "cuda" and not torch.cuda.is_available():
        from engine.errors import ModelLoadError

        raise ModelLoadError(f"Device {requested!r} is not available: no CUDA GPU was found.",
                             "Choose 'auto' or 'cpu'.")
    if base == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        from engine.errors import ModelLoadError

        raise ModelLoadError("Device 'mps' is not available on this machine.",
                             "Choose 'auto' or 'cpu'.")
    if base not in ("cpu", "cuda", "mps"):
        from engine.errors import ModelLoadError

        raise ModelLoadError(f"Unknown device {requested!r}.", "Use auto, cpu, cuda, cuda:N or mps.")
    return requested


def supported_dtypes(device: str) -> list[str]:
    """float16 is offered only on accelerators: CPU float16 matmuls are slow or missing."""
    if device.startswith("cpu"):
        return ["float32", "bfloat16"]
    if device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        return ["float32", "float16"]
    return ["float32", "bfloat16", "float16"]


def memory_used(device: str) -> int:
    """Bytes allocated by torch on ``device`` (0 where torch cannot tell, e.g. CPU)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.memory_allocated(device))
    return 0
