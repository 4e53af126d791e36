"""A parallel block's layer after a head's z patch takes its query, key/value and MLP-input
products from narrow ones (engine/lowrank_next.py): TransformerLens's numbers on GPT-NeoX (two
LayerNorms), Phi (one norm for attention and MLP, partial rotary) and Falcon, with norm weights
and biases that are not their initial ones; the exactness check runs the path and rejects it
when it is wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.dense import linear
from engine.jobs import Context
from engine.lowrank_next import NextLayerJoin
from engine.patch_plan import PlanItem, PlanRequest, run_plan
from tests.engine.test_lowrank_join import _sweep, assert_check_rejects
from tests.tl_reference import PAIRS, Runs, assert_spread

PARALLEL = ["gpt_neox", "phi", "falcon"]


@pytest.mark.parametrize("family", PARALLEL)
@pytest.mark.parametrize("kind,pairs", [("head_out", "two_pairs"), ("head_out", "first"),
                                        ("head_out", "middle")])
def test_next_layer_join_equals_transformer_lens(skewed_host, family, kind, pairs):
    host = skewed_host(family)
    ours, runner = _sweep(host, kind, pairs)
    assert runner.suffix is not None and runner.suffix.next_join is not None
    # Cells of every layer but the last two reach a later non-last layer this way (the last
    # layer runs at the answer position only).
    n_heads, n_layers = host.info.n_heads, host.info.n_layers
    assert runner.suffix.next_join.rows >= n_heads * (n_layers - 2), "the path was not taken"
    tl = Runs(host, PAIRS[pairs], "logit_diff")
    parts = ours.labels["components"]
    for c, part in enumerate(parts):
        ref = tl.sweep(part)
        values = ours.values[c] if len(parts) > 1 else ours.values
        values = values[tuple(slice(0, n) for n in ours.part_shape(part))]
        scale = assert_spread(ref, part)
        np.testing.assert_allclose(values.reshape(ref.shape), ref,
                                   atol=1e-4 * max(1.0, scale), rtol=1e-4)


def test_a_plan_mixing_z_with_query_patches_equals_the_full_products(skewed_host, monkeypatch):
    """Rows joining a layer with a query patch (computed in full) beside rows that joined the
    layer before with z alone (narrow), and a run patching both at two layers: the same numbers
    as with the narrow path off."""
    host = skewed_host("phi")
    calls = []
    real = NextLayerJoin.__call__

    def spy(self, *args):
        calls.append(args[3].shape[0])
        return real(self, *args)

    monkeypatch.setattr(NextLayerJoin, "__call__", spy)
    items = (PlanItem("z", 0, 1), PlanItem("q", 0, 2), PlanItem("z", 1, 3), PlanItem("q", 1, 0))
    request = PlanRequest(PAIRS["two_pairs"], items, metric="logit_diff")
    host.__dict__.pop("_patching_shortcuts_exact", None)
    on = run_plan(host, request, Context())
    assert calls, "the plan did not take the next-layer path"
    assert "prefix keys and values cached" in on.path  # the suffix forward ran the plan
    monkeypatch.setattr(NextLayerJoin, "usable", lambda self, layer: False)
    host.__dict__.pop("_patching_shortcuts_exact", None)
    off = run_plan(host, request, Context())
    assert_spread(off.values, "plan")
    np.testing.assert_allclose(on.values, off.values, atol=2e-5 * np.abs(off.values).max())
    host.__dict__.pop("_patching_shortcuts_exact", None)


def test_the_exactness_check_runs_the_next_layer_path_and_rejects_it_when_wrong(
        skewed_host, monkeypatch):
    """Products off by 1% are caught by the per-model check."""
    assert_check_rejects(skewed_host("gpt_neox"), monkeypatch, NextLayerJoin,
                         lambda out: {key: value * 1.01 for key, value in out.items()})


def test_the_next_layer_path_matches_the_full_products(skewed_host, monkeypatch):
    host = skewed_host("gpt_neox")
    on, runner = _sweep(host, "head_out", "first")
    assert runner.suffix.next_join.rows > 0
    monkeypatch.setattr(NextLayerJoin, "usable", lambda self, layer: False)
    off, runner = _sweep(host, "head_out", "first")
    assert runner.suffix.next_join.rows == 0
    assert np.ptp(off.values) > 1e-2
    np.testing.assert_allclose(on.values, off.values, atol=2e-5 * np.abs(off.values).max())


@pytest.mark.parametrize("heads", ["in_order", "one_each", "two_at_once"])
def test_unfolded_norms_and_several_heads_give_the_modules_products(skewed_host, heads):
    """TransformerLens folds norm weights into the next products, so sweeps only meet weight 1;
    norms with their own weight and bias (as the formula allows), and rows patching one head
    each, in order or not, or two heads at once, give what the norms and weights compute."""
    host = skewed_host("gpt_neox")
    _sweep(host, "head_out", "first")
    suffix = host.__dict__["_patching_runner"][1].suffix
    model, cfg = host.model, host.model.cfg
    g = torch.Generator().manual_seed(3)
    norms = {}
    for name in ("ln1", "ln2"):
        ln = torch.nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        with torch.no_grad():
            ln.weight.copy_(1 + 0.5 * torch.randn(cfg.d_model, generator=g))
            ln.bias.copy_(0.3 * torch.randn(cfg.d_model, generator=g))
        norms[1, name] = ln
    join = NextLayerJoin(model, suffix.form, norms, suffix._weights, with_mlp=True)
    assert join.usable(1)
    n_pos, n_heads, d_head = 5, cfg.n_heads, cfg.d_head
    n_rows = n_heads if heads == "in_order" else 3
    dz = torch.zeros(n_rows, n_pos, n_heads, d_head)
    for r in range(n_rows):
        head = r if heads == "in_order" else (2 * r + 1) % n_heads
        dz[r, :, head] = torch.randn(n_pos, d_head, generator=g)
        if heads == "two_at_once":
            dz[r, :, (head + 1) % n_heads] = torch.randn(n_pos, d_head, generator=g)
    y_base = 3 * torch.randn(1, n_pos, cfg.d_model, generator=g)
    with torch.inference_mode():
        y = y_base + torch.einsum("rthe,hed->rtd", dz, model.blocks[0].attn.W_O)
        got = join(1, y_base, y, dz, 1)
        w, mlp = suffix._weights(1), model.blocks[1].mlp
        h1, h2 = norms[1, "ln1"](y).reshape(-1, cfg.d_model), norms[1, "ln2"](y)
        want = {"q": linear(h1, w["q"], w["bq"]), "kv": linear(h1, w["kv"], w["bkv"]),
                "in": h2 @ mlp.W_in + mlp.b_in}
    for key, value in want.items():
        torch.testing.assert_close(got[key], value.reshape(got[key].shape), atol=1e-4,
                                   rtol=1e-4)
    assert join.rows == n_rows * n_pos
