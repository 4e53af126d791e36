"""A cell's first computed layer sees its input changed at its patched position alone: the suffix
forward projects queries, keys and values there only (and a parallel block runs its MLP there
only), taking the base run's everywhere else. Same numbers as TransformerLens's block sweep;
counted exactly; the exactness check catches a wrong mask. Also the cheaper norms it calls and
the patch hook that touches only the variants it patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.fast_norms import RmsNorm, fast_norm
from engine.host import load_host
from engine.jobs import Context
from engine.model_sources import ModelSpec
from engine.patch_hooks import where_hook
from engine.patch_runner import PatchRunner
from engine.patching import PromptPair, SweepRequest, run_sweep
from engine.suffix_forward import SuffixForward
from tests.model_matrix import make_family_folder
from tests.tl_reference import Runs, assert_spread

EARLY = PromptPair("John gave a drink to Mary and then went home, and",
                   "Mary gave a drink to Mary and then went home, and", " John", " Mary")


@pytest.fixture(scope="module")
def family_host(tmp_path_factory):
    hosts = {}

    def get(family):
        if family not in hosts:
            folder = make_family_folder(family, tmp_path_factory.mktemp(family))
            hosts[family] = load_host(ModelSpec("folder", str(folder), "cpu"))
        return hosts[family]

    return get


def _block_sweep(host, monkeypatch):
    """The block sweep of EARLY with every start position its own bucket, in one forward;
    compared with TransformerLens. (runner, first position computed, positions, layers)."""
    monkeypatch.setattr(PatchRunner, "min_rows", 0)
    host.__dict__.pop("_patching_runner", None)
    ours = run_sweep(host, SweepRequest((EARLY,), "block"), Context())
    runs = Runs(host, (EARLY,))
    ref = runs.sweep("block")
    scale = assert_spread(ref, "block")
    np.testing.assert_allclose(ours.values, ref, atol=1e-4 * max(1.0, scale), rtol=1e-4)
    runner = host.__dict__["_patching_runner"][1]
    assert runner.suffix is not None, "the suffix forward was not used"
    assert ours.chunk_size >= ours.total  # one chunk: the counts below are exact
    return runner, runs.first_difference(), runner.n_pos, runner.n_layers


def _first_layer_rows(first: int, n: int, n_layers: int) -> int:
    """Variant-positions projected (queries) or, in a parallel block, run through the MLP, in a
    block sweep: per start position p, at layer l >= 1 below the last, the 3l - 2 cells started
    before l - 1 over the n - p positions, and at p only the attn_out and mlp_out cells of l - 1
    and the resid_pre cell joining at l (layer 0: that cell alone); the last layer at the answer
    position only, for every cell that started below it and its resid_pre cell."""
    return sum(1 + sum((3 * layer - 2) * (n - p) + 3 for layer in range(1, n_layers - 1))
               + 3 * (n_layers - 1) + 1 for p in range(first, n))


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_a_cells_first_layer_projects_its_patched_position_only(family_host, family,
                                                                 monkeypatch):
    runner, first, n, n_layers = _block_sweep(family_host(family), monkeypatch)
    assert runner.suffix.query_rows == _first_layer_rows(first, n, n_layers)


def test_a_parallel_block_runs_a_cells_first_mlp_at_its_patched_position_only(family_host,
                                                                             monkeypatch):
    """GPT-NeoX: attention and the MLP both read resid_pre, so the MLP of a cell's first layer
    runs where its input changed, as its projections do."""
    runner, first, n, n_layers = _block_sweep(family_host("gpt_neox"), monkeypatch)
    assert runner.suffix.form.parallel
    assert runner.suffix.mlp_rows == _first_layer_rows(first, n, n_layers)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_the_exactness_check_catches_a_mask_missing_the_patched_position(family_host, family,
                                                                         monkeypatch):
    """With masks that leave out each row's first changed position, rows take the base run's
    projections where they differ: the check must reject the suffix forward (its single-position
    variants take this path), and the sweep still gives TransformerLens's numbers."""
    host = family_host(family)
    real = SuffixForward._sparse_rows
    calls = []

    def wrong(self, *args):
        got = real(self, *args)
        if got is None:
            return None
        calls.append(1)
        first, mask = got
        cleared = mask.clone()
        hit = mask.any(1)
        cleared[hit, mask[hit].float().argmax(1)] = False
        return first, cleared

    monkeypatch.setattr(SuffixForward, "_sparse_rows", wrong)
    host.__dict__.pop("_patching_shortcuts_exact", None)
    host.__dict__.pop("_patching_runner", None)
    ours = run_sweep(host, SweepRequest((EARLY,), "block"), Context())
    assert calls, "the check never ran the sparse rows"
    assert host.__dict__["_patching_runner"][1].suffix is None
    ref = Runs(host, (EARLY,)).sweep("block")
    np.testing.assert_allclose(ours.values, ref, atol=1e-4 * max(1.0, np.abs(ref).max()),
                               rtol=1e-4)
    host.__dict__.pop("_patching_shortcuts_exact", None)  # later tests check afresh


@pytest.mark.parametrize("family,form", [("gpt2", torch.nn.LayerNorm), ("llama", RmsNorm),
                                         ("gemma", None)])
def test_fast_norms_compute_what_the_bridge_does(family_host, family, form):
    """LayerNorm itself, the two-pass RMS norm, or (Gemma's weight offset) the wrapped module:
    each equal to the bridge's norm on rows of very different scales."""
    host = family_host(family)
    ln = host.model.blocks[1].ln2
    norm = fast_norm(ln, float(host.model.cfg.eps), int(host.model.cfg.d_model))
    assert norm is not ln
    if form is not None:
        assert isinstance(norm, form)
    x = torch.randn(4, 6, int(host.model.cfg.d_model)) * torch.tensor([1e-2, 1, 10, 300])[
        :, None, None]
    with torch.no_grad():
        want = ln(x)
        np.testing.assert_allclose(norm(x), want, atol=1e-5 * float(want.abs().max()))


def test_rms_norm_with_a_weight_and_a_norm_nothing_matches():
    weight = torch.rand(16) + 0.5
    x = torch.randn(3, 5, 16) * 7
    np.testing.assert_allclose(RmsNorm(weight, 1e-6)(x),
                               torch.nn.functional.rms_norm(x, (16,), weight, 1e-6), atol=1e-5)

    class Bridge(torch.nn.Module):  # claims RMS, computes something else
        uses_rms_norm, uses_weight_offset = True, False

        def __init__(self):
            super().__init__()
            self.original_component = torch.nn.RMSNorm(16, eps=1e-6)

        def forward(self, y):
            return self.original_component(y) * 2

    bridge = Bridge()
    assert fast_norm(bridge, 1e-6, 16) is bridge


def test_the_patch_hook_touches_only_the_variants_it_patches():
    """Rows of variants whose mask is clear are neither read nor written (NaN stays NaN there);
    an activation holding fewer variants than the mask (the first ones) is patched as far as it
    goes."""
    n_pairs, n_var = 2, 4
    mask = torch.zeros(n_var, 1, 3, 1, dtype=torch.bool)
    mask[1, 0, 2] = True
    mask[2, 0, 0] = True
    values = torch.arange(n_pairs * 3 * 5, dtype=torch.float32).reshape(n_pairs, 3, 5)
    act = torch.full((n_var * n_pairs, 3, 5), float("nan"))
    act[2:6] = 0.0
    hook = where_hook(mask, values, n_pairs)
    out = hook(act)
    assert out is act
    assert torch.isnan(act[:2]).all() and torch.isnan(act[6:]).all()
    assert torch.equal(act[2:4, 2], values[:, 2]) and not act[2:4, :2].any()
    assert torch.equal(act[4:6, 0], values[:, 0]) and not act[4:6, 1:].any()
    short = torch.zeros(2 * n_pairs, 3, 5)  # variants 0 and 1 only
    hook(short)
    assert torch.equal(short[2:4, 2], values[:, 2]) and not short[:2].any()
