"""Batched, multi-sender path patching against TransformerLens's ``get_act_patch_direct_path``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformer_lens import patching as tlp

from engine.errors import InputError
from engine.jobs import Context
from engine.patching import Metric, PromptPair, prepare_pairs
from engine.path_patching import PathPatchRequest, run_path_patching

SHORT = PromptPair("When John and Mary went, John gave it to",
                   "When John and Mary went, Mary gave it to", " Mary", " John")
OTHER = PromptPair("When Alice and Bob went, Alice gave it to",
                   "When Alice and Bob went, Bob gave it to", " Bob", " Alice")


def _setup(host, pairs):
    pb = prepare_pairs(host, pairs)
    metric = Metric("logit_diff_norm", pb)
    model = host.model
    rows = torch.arange(len(pairs))
    cl, cc = model.run_with_cache(pb.clean)
    co, rc = model.run_with_cache(pb.corrupted)
    metric.set_baselines(cl[rows, pb.positions], co[rows, pb.positions])
    return pb, metric, cc, rc


@pytest.mark.parametrize("component", ["q", "k", "v"])
@torch.inference_mode()
def test_one_sender_equals_transformer_lens(tiny_host, component):
    pb, metric, cc, rc = _setup(tiny_host, (SHORT,))
    ref = tlp.get_act_patch_direct_path(tiny_host.model, pb.corrupted, cc, rc,
                                        metric.full_logits_fn(), 0, 1, component=component,
                                        verbose=False).cpu().numpy()
    res = run_path_patching(tiny_host, PathPatchRequest((SHORT,), ((0, 1),), component),
                            Context())
    assert np.isnan(res.receivers[0]).all() and np.isfinite(res.receivers[1:]).all()
    assert np.ptp(ref[1:]) > 1e-3, "degenerate: the comparison would prove nothing"
    np.testing.assert_allclose(res.receivers[1:], ref[1:], atol=1e-4)
    # Batched: fewer forwards than TransformerLens's one per receiver.
    n_receivers = (tiny_host.info.n_layers - 1) * tiny_host.info.n_heads
    assert res.forwards < n_receivers


@torch.inference_mode()
def test_several_senders_and_pairs_equal_the_unbatched_algorithm(tiny_host):
    """Senders in two layers: a receiver gets only the earlier senders' writes. The reference is
    TransformerLens's own direct-path hook (on the split q/k/v fork), one receiver per forward."""
    from transformer_lens.patching import _make_direct_path_hook, _split_qkv_input

    pairs = (SHORT, OTHER)
    senders = ((0, 1), (0, 3), (1, 0))
    res = run_path_patching(tiny_host, PathPatchRequest(pairs, senders, "q"), Context())
    pb, metric, cc, rc = _setup(tiny_host, pairs)
    model = tiny_host.model
    n_layers, n_heads = tiny_host.info.n_layers, tiny_host.info.n_heads

    def write(sl, sh):
        z = f"blocks.{sl}.attn.hook_z"
        return (cc[z][:, :, sh] - rc[z][:, :, sh]) @ model.blocks[sl].attn.W_O[sh]

    ref = np.full((n_layers, n_heads), np.nan)
    with _split_qkv_input(model):
        for dl in range(1, n_layers):
            delta = sum(write(sl, sh) for sl, sh in senders if sl < dl)
            for dh in range(n_heads):
                fired = []
                logits = model.run_with_hooks(pb.corrupted, fwd_hooks=[(
                    f"blocks.{dl}.attn.hook_q_input", _make_direct_path_hook(delta, dh, fired))])
                assert fired
                ref[dl, dh] = float(metric.full_logits_fn()(logits))
    assert np.ptp(ref[1:]) > 1e-3
    np.testing.assert_allclose(res.receivers[1:], ref[1:], atol=1e-4)
    # Direct to the logits: the summed write added at ln_final's input of the corrupted run.
    total = sum(write(*s) for s in senders)
    logits = model.run_with_hooks(pb.corrupted, fwd_hooks=[("ln_final.hook_in",
                                                            lambda x, hook: x + total)])
    assert res.direct_to_logits == pytest.approx(float(metric.full_logits_fn()(logits)),
                                                 abs=1e-4)
    assert res.label == "L0H1 + L0H3 + L1H0"
    # The model is unchanged afterwards (no hook left behind by the capture).
    clean_again = model(pb.clean)
    np.testing.assert_allclose(clean_again.numpy(), model.run_with_cache(pb.clean)[0].numpy(),
                               atol=1e-6)


def test_bad_senders_are_refused(tiny_host):
    with pytest.raises(InputError, match="does not exist"):
        run_path_patching(tiny_host, PathPatchRequest((SHORT,), ((5, 0),)), Context())
    with pytest.raises(InputError, match="No sender"):
        run_path_patching(tiny_host, PathPatchRequest((SHORT,), ()), Context())
    with pytest.raises(InputError, match="not q, k or v"):
        run_path_patching(tiny_host, PathPatchRequest((SHORT,), ((0, 0),), "z"), Context())


def test_bundled_model_agrees(bundled_host):
    pair = PromptPair("The cat sat on the mat", "The dog sat on the mat", " and", " the")
    pb, metric, cc, rc = _setup(bundled_host, (pair,))
    ref = tlp.get_act_patch_direct_path(bundled_host.model, pb.corrupted, cc, rc,
                                        metric.full_logits_fn(), 1, 2, component="k",
                                        verbose=False).cpu().numpy()
    res = run_path_patching(bundled_host, PathPatchRequest((pair,), ((1, 2),), "k"), Context())
    np.testing.assert_allclose(res.receivers[2:], ref[2:], atol=1e-4)
