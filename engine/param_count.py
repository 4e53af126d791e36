"""The parameter count a model card gives: the checkpoint's own parameters, counted once.

A booted TransformerBridge holds more tensors than the checkpoint: it adds split q/k/v copies of
fused QKV weights and, in compatibility mode, a separate (centred) unembedding where the
checkpoint ties it to the embedding. Counting those gave 1.8M for the 1,234,688-parameter bundled
model. Instead the architecture is built again from its config on the ``meta`` device (no
memory, a few ms) and counted the way ``transformers``' ``num_parameters()`` does, which is what
model cards and the Hub report. If that is not possible the safetensors headers are summed.
"""

from __future__ import annotations

import math
from pathlib import Path


def checkpoint_parameter_count(config, folder: str | Path) -> int:
    """Parameters of the model ``config`` describes (tied weights once); 0 if unknown."""
    try:
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
        return int(model.num_parameters())
    except Exception:  # an architecture transformers cannot build from its config alone
        return safetensors_parameter_count(folder)


def safetensors_parameter_count(folder: str | Path) -> int:
    """Elements of every tensor in the model's own safetensors files (headers only; a stray
    file beside them, which may be a pipe, is never opened); 0 if they cannot be read."""
    from engine.errors import ModelLoadError
    from engine.model_folder import tensor_shapes, weight_files

    try:
        shapes = tensor_shapes(weight_files(Path(folder)))
    except ModelLoadError:
        return 0
    return sum(math.prod(shape) for shape in shapes.values())


def format_count(n: int) -> str:
    """1234688 -> '1.23M', 124439808 -> '124M', 131072 -> '131K'."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(int(n))
