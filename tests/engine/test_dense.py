"""engine.dense: the fused dense layers equal F.linear plus the activation, on every path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine import dense
from engine.fast_norms import plain_layer_norm
from engine.jobs import Context
from engine.patching import PromptPair, SweepRequest, run_sweep

REFERENCE = {
    "gelu_new": lambda t: 0.5 * t * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (t + 0.044715 * t**3))),
    "gelu": F.gelu,
    "relu": torch.relu,
    "silu": F.silu,
    None: lambda t: t,
}


@pytest.fixture(params=["onednn", "fallback"])
def path(request, monkeypatch):
    if request.param == "onednn":
        if not dense._probe():
            pytest.skip("this PyTorch build has no working oneDNN linear")
        monkeypatch.setattr(dense, "_onednn_ok", True)
    else:
        monkeypatch.setattr(dense, "_onednn_ok", False)
    return request.param


def weights(n_in=48, n_out=40, rows=7):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(rows, n_in, generator=g), torch.randn(n_in, n_out, generator=g) / 7,
            torch.randn(n_out, generator=g), torch.randn(rows, n_out, generator=g))


@pytest.mark.parametrize("act", list(REFERENCE))
def test_linear_equals_the_written_out_layer(path, act):
    x, w, b, _ = weights()
    want = REFERENCE[act](x @ w + b)
    with torch.inference_mode():
        packed = dense.pack(object.__new__(type("M", (), {})), "w", (w,), lambda: w.t())
        for weight in (w.t(), packed):  # TransformerLens's [in, out] through a view; packed
            got = dense.linear(x, weight, b, act)
            assert got.shape == want.shape
            assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert packed.is_mkldnn == (path == "onednn")


def test_linear_fuses_the_residual_add(path):
    x, w, b, r = weights()
    with torch.inference_mode():
        got = dense.linear(x, w.t(), b, residual=r)
        assert torch.allclose(got, r + x @ w + b, atol=1e-5, rtol=1e-5)
        assert not torch.equal(got, x @ w + b)  # the residual really is in it
        with pytest.raises(ValueError):
            dense.linear(x, w.t(), b, "relu", residual=r)


def test_linear_keeps_gradients_by_taking_f_linear():
    x, w, b, _ = weights()
    w.requires_grad_(True)
    out = dense.linear(x, w.t(), b, "gelu_new")
    out.sum().backward()  # the oneDNN op has no backward: this only works on F.linear
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_pack_is_kept_and_rebuilt_when_the_weight_changes(monkeypatch):
    if not dense._probe():
        pytest.skip("this PyTorch build has no working oneDNN linear")
    monkeypatch.setattr(dense, "_onednn_ok", True)
    owner = type("Model", (), {})()
    x, w, b, _ = weights()
    built = []

    def make():
        built.append(1)
        return w.t()

    first = dense.pack(owner, "w", (w,), make)
    assert dense.pack(owner, "w", (w,), make) is first and len(built) == 1
    with torch.no_grad():
        w.mul_(2)  # an in-place edit of the source: the kept copy is stale
    again = dense.pack(owner, "w", (w,), make)
    assert len(built) == 2 and again is not first
    with torch.inference_mode():
        assert torch.allclose(dense.linear(x, again, b), x @ w + b, atol=1e-5, rtol=1e-5)


def test_pack_stays_within_its_budget(monkeypatch):
    if not dense._probe():
        pytest.skip("this PyTorch build has no working oneDNN linear")
    monkeypatch.setattr(dense, "_onednn_ok", True)
    x, w, b, _ = weights(48, 40)
    monkeypatch.setattr(dense, "PACK_BUDGET_BYTES", w.numel() * 4 * 3 // 2)  # room for one
    owner = type("Model", (), {})()
    one = dense.pack(owner, "a", (w,), lambda: w.t())
    w2 = w.clone()
    two = dense.pack(owner, "b", (w2,), lambda: w2.t())
    assert one.is_mkldnn and not two.is_mkldnn  # over budget: the weight as it is
    with torch.inference_mode():
        assert torch.allclose(dense.linear(x, two, b), x @ w + b, atol=1e-5, rtol=1e-5)


def test_sweeps_agree_on_both_paths_and_use_onednn_on_cpu(tiny_host, monkeypatch):
    pair = PromptPair("When John and Mary went to the store, John gave a drink to",
                      "When Mary and John went to the store, John gave a drink to",
                      " Mary", " John")  # differ early: every layer recomputes most positions
    results = {}
    for mode in (False, True):
        if mode and not dense._probe():
            pytest.skip("this PyTorch build has no working oneDNN linear")
        monkeypatch.setattr(dense, "_onednn_ok", mode)
        dense._packs.pop(tiny_host.model, None)
        tiny_host.__dict__.pop("_patching_runner", None)  # (its forward keeps its weights)
        results[mode] = run_sweep(tiny_host, SweepRequest((pair,), "head_out"), Context()).values
        kept = dense._packs.get(tiny_host.model, {})
        # The sweep's layers went through oneDNN (layer 1's MLP runs the cells started at layer
        # 0 in full; the cells joining at a layer take engine.lowrank_join's narrow products).
        assert (("mlp_in", 1) in kept) == mode
    diff = abs(torch.as_tensor(results[True]) - torch.as_tensor(results[False])).max()
    assert float(diff) < 1e-5 and float(abs(torch.as_tensor(results[True])).max()) > 1e-3


def test_plain_layer_norm_is_found_only_where_it_is_exact(tiny_host):
    ln = tiny_host.model.blocks[0].ln1
    inner = plain_layer_norm(ln, tiny_host.model.cfg.eps)
    assert isinstance(inner, torch.nn.LayerNorm)
    x = torch.randn(3, 5, tiny_host.model.cfg.d_model)
    with torch.inference_mode():
        assert torch.allclose(inner(x), ln(x), atol=1e-5)
    assert plain_layer_norm(ln, tiny_host.model.cfg.eps * 10) is None  # another eps

    class Rms:
        original_component = inner
        uses_rms_norm = True
        uses_weight_offset = False

    assert plain_layer_norm(Rms(), tiny_host.model.cfg.eps) is None
