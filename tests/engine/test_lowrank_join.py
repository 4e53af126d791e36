"""The head sweep's narrow MLP products at the joining layer (engine/lowrank_join.py) give
TransformerLens's numbers on LayerNorm and RMSNorm models whose norm weights, norm biases and MLP
biases are not their initial ones (TransformerLens folds the norms' into the MLP's weights and
bias, so the constant term is exercised); the exactness check exercises the path and rejects it
when it is wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.jobs import Context
from engine.lowrank_join import LowRankJoin, norm_affine
from engine.patching import SweepRequest, run_sweep
from tests.tl_reference import PAIRS, Runs, assert_spread


def _sweep(host, kind, pairs):
    host.__dict__.pop("_patching_runner", None)  # a fresh runner: its counters start at zero
    ours = run_sweep(host, SweepRequest(PAIRS[pairs], kind, metric="logit_diff"), Context())
    return ours, host.__dict__["_patching_runner"][1]


# LayerNorm with biases (GPT-2), RMSNorm with a gated MLP and grouped keys (Llama), RMSNorm with
# Gemma's weight offset, multi-query attention (GPT-BigCode).
@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma", "gpt_bigcode"])
@pytest.mark.parametrize("kind,pairs", [("head_out", "two_pairs"), ("head_out_by_pos", "first")])
def test_narrow_join_equals_transformer_lens(skewed_host, family, kind, pairs):
    """By position, a cell's z changes one position: its MLP runs there alone instead."""
    host = skewed_host(family)
    ours, runner = _sweep(host, kind, pairs)
    assert runner.suffix is not None and runner.suffix.lowrank is not None
    if kind == "head_out":
        assert runner.suffix.lowrank.rows > 0, "the head sweep did not take the narrow path"
    else:
        assert runner.suffix.lowrank.rows == 0
    ref = Runs(host, PAIRS[pairs], "logit_diff").sweep(kind)
    scale = assert_spread(ref, kind)
    np.testing.assert_allclose(ours.values, ref, atol=1e-4 * max(1.0, scale), rtol=1e-4)


def assert_check_rejects(host, monkeypatch, cls, spoil) -> None:
    """With ``cls.__call__``'s output passed through ``spoil``, the per-model check runs it
    during a head sweep and keeps the suffix forward off; the sweep still gives
    TransformerLens's numbers."""
    real = cls.__call__
    calls = []

    def wrong(self, *args):
        calls.append(args[0])
        return spoil(real(self, *args))

    monkeypatch.setattr(cls, "__call__", wrong)
    host.__dict__.pop("_patching_shortcuts_exact", None)
    ours, runner = _sweep(host, "head_out", "middle")
    assert calls, f"the check never ran {cls.__name__}"
    assert runner.suffix is None
    ref = Runs(host, PAIRS["middle"], "logit_diff").sweep("head_out")
    scale = assert_spread(ref, "head_out")
    np.testing.assert_allclose(ours.values, ref, atol=1e-4 * max(1.0, scale), rtol=1e-4)
    host.__dict__.pop("_patching_shortcuts_exact", None)  # later tests check afresh


def test_the_exactness_check_runs_the_narrow_path_and_rejects_it_when_wrong(skewed_host,
                                                                            monkeypatch):
    """A narrow path whose output is off by 0.1% is caught by the per-model check."""
    assert_check_rejects(skewed_host("gpt2"), monkeypatch, LowRankJoin, lambda out: out * 1.001)


def test_the_narrow_path_matches_the_full_products(skewed_host, monkeypatch):
    """Same sweep with the narrow path turned off: the cells agree to float32 rounding."""
    host = skewed_host("llama")
    on, runner = _sweep(host, "head_out", "middle")
    assert runner.suffix.lowrank.rows > 0
    monkeypatch.setattr(LowRankJoin, "usable", lambda self, layer, patches: False)
    off, runner = _sweep(host, "head_out", "middle")
    assert runner.suffix.lowrank.rows == 0
    assert np.ptp(off.values) > 1e-2
    np.testing.assert_allclose(on.values, off.values, atol=2e-5 * np.abs(off.values).max())


def test_norm_affine_reads_layer_norms_and_refuses_other_modules():
    ln = torch.nn.LayerNorm(8, eps=1e-3)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-1, 1)
    centred, weight, bias, eps = norm_affine(ln, None)
    assert centred and eps == pytest.approx(1e-3)
    assert torch.equal(weight, ln.weight.detach()) and torch.equal(bias, ln.bias.detach())

    class Doubling(torch.nn.Module):  # not a norm: scales its input
        weight = torch.ones(8)
        uses_rms_norm = True
        uses_weight_offset = False

        def forward(self, y):
            return 2 * y

    assert norm_affine(Doubling(), None) is None


def test_a_norm_weight_that_is_not_folded_is_applied(skewed_host):
    """TransformerLens folds norm weights into the MLP, so sweeps only meet weight 1; a norm
    with its own weight and bias (as the formula allows) gives the module's MLP output too."""
    from engine.block_form import describe

    model = skewed_host("gpt2").model
    cfg = model.cfg
    g = torch.Generator().manual_seed(3)
    ln = torch.nn.LayerNorm(cfg.d_model, eps=cfg.eps)
    with torch.no_grad():
        ln.weight.copy_(1 + 0.5 * torch.randn(cfg.d_model, generator=g))
        ln.bias.copy_(0.3 * torch.randn(cfg.d_model, generator=g))
    join = LowRankJoin(model, describe(model), {(0, "ln2"): ln})
    assert join.usable(0, {"blocks.0.attn.hook_z": None})
    n_pos = 5
    y_base = 3 * torch.randn(1, n_pos, cfg.d_model, generator=g)
    dz = torch.zeros(2, n_pos, cfg.n_heads, cfg.d_head)
    dz[0, :, 1] = torch.randn(n_pos, cfg.d_head, generator=g)
    dz[1, :, cfg.n_heads - 1] = torch.randn(n_pos, cfg.d_head, generator=g)
    with torch.inference_mode():
        got = join(0, y_base, dz, 1)
        w_o = model.blocks[0].attn.W_O
        y = y_base + torch.einsum("rthe,hed->rtd", dz, w_o)
        want = y + model.blocks[0].mlp(ln(y))
    assert float((want - y).abs().max()) > 1e-2  # the MLP adds something
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
