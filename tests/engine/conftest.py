"""Fixtures shared by the engine tests of the narrow products (test_lowrank_*.py)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.host import load_host
from engine.model_sources import ModelSpec
from tests.model_matrix import make_family_folder


def vectors_randomised(folder):
    """Every 1-D tensor of the checkpoint (norm weights, biases) set to random values: a random
    initialisation leaves norm weights at one and biases at zero, which would hide a wrong
    constant term."""
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    g = torch.Generator().manual_seed(5)
    for name, t in tensors.items():
        if t.dim() == 1:
            noise = torch.randn(t.shape, generator=g)
            is_weight = "norm" in name or "ln" in name
            tensors[name] = (1.0 + 0.5 * noise if is_weight else 0.3 * noise).to(t.dtype)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def skewed_host(tmp_path_factory):
    hosts = {}

    def get(family):
        if family not in hosts:
            folder = make_family_folder(family, tmp_path_factory.mktemp(family))
            hosts[family] = load_host(ModelSpec("folder", str(vectors_randomised(folder)),
                                                "cpu"))
        return hosts[family]

    return get
