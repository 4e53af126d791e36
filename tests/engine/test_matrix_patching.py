"""Every sweep kind on every architecture family equals TransformerLens's ``get_act_patch_*``, or
is refused with a clear message where TransformerLens's hook cannot do what it says."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputError
from engine.jobs import Context
from engine.patching import COMPOSITE, SWEEP_COMPONENT, SweepRequest, run_sweep
from tests.model_matrix import CORE, EXTRA
from tests.tl_reference import PAIRS, Runs, assert_spread, sample_cells

# Every kind of patch, each on one of the prompt-pair sets (so every set is used on every model).
# The composites cover the all-position sweeps: "block" is resid_pre, attn_out and mlp_out by
# layer × position, "head_every" each head's z, q, k, v and pattern by layer × head.
PLAN = [("block", "first"), ("head_every", "middle"), ("resid_mid", "last"),
        ("head_out_by_pos", "several"), ("head_q_by_pos", "two_pairs"),
        ("head_k_by_pos", "first"), ("head_v_by_pos", "last"),
        ("head_pattern_by_pos", "middle"), ("attn_out", "two_pairs"), ("head_out", "two_pairs")]
LIGHT = [("block", "first"), ("head_every", "middle"), ("resid_mid", "last"),
         ("head_out_by_pos", "several"), ("head_k_by_pos", "two_pairs")]


def _components(kind: str) -> tuple[str, ...]:
    return tuple(SWEEP_COMPONENT[p] for p in COMPOSITE.get(kind, (kind,)))


def _compare(host, kind: str, pairs_name: str, runs: dict) -> None:
    caps = host.caps
    missing = [c for c in _components(kind) if c in caps.missing]
    # The raw logit difference: the normalised metric divides by a random model's small
    # clean-corrupted gap, which magnifies float32 rounding (tests/engine/test_patching.py checks
    # the normalisation itself).
    request = SweepRequest(PAIRS[pairs_name], kind, metric="logit_diff")
    if missing:
        with pytest.raises(InputError) as err:
            run_sweep(host, request, Context())
        assert caps.missing[missing[0]] in err.value.message
        return
    ours = run_sweep(host, request, Context())
    if pairs_name not in runs:
        runs[pairs_name] = Runs(host, PAIRS[pairs_name], "logit_diff")
    tl = runs[pairs_name]
    assert ours.complete and ours.path
    parts = ours.labels["components"]
    for c, part in enumerate(parts):
        shape = ours.part_shape(part)
        values = ours.values[c] if len(parts) > 1 else ours.values
        real = values[tuple(slice(0, n) for n in shape)]
        assert np.isfinite(real).all()
        # A grouped-query model's k/v part of a composite has fewer heads: the rest is NaN
        # (TransformerLens pads with zeros, which read as measurements).
        pad = np.ones(values.shape, bool)
        pad[tuple(slice(0, n) for n in shape)] = False
        assert np.isnan(values[pad]).all(), "padding must be NaN, not a number"
        # TransformerLens's function on a sample of the cells (its index_df option).
        cells = sample_cells(shape, ours.labels["part_axes"][part], tl.first_difference())
        ref = tl.sweep(part, cells=cells)
        got = np.array([real[cell] for cell in cells])
        _close(got, ref, f"{kind}/{part}" if len(parts) > 1 else kind)


def _close(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    scale = assert_spread(ref, what)
    np.testing.assert_allclose(ours, ref, atol=1e-4 * max(1.0, scale), rtol=1e-4,
                               err_msg=what)


@pytest.mark.parametrize("family", CORE)
def test_every_sweep_equals_transformer_lens(family_host, family):
    host, runs = family_host(family), {}
    for kind, pairs_name in PLAN:
        _compare(host, kind, pairs_name, runs)


@pytest.mark.parametrize("family", EXTRA)
def test_sweeps_on_further_families(family_host, family):
    host, runs = family_host(family), {}
    for kind, pairs_name in LIGHT:
        _compare(host, kind, pairs_name, runs)


@pytest.mark.parametrize("family", ["opt", "gpt_neo", "gptj", "xglm"])
def test_read_only_pattern_hooks_are_refused_because_they_do_nothing(family_host, family):
    """TransformerLens's own pattern sweep on these bridges returns the corrupted baseline in
    every cell: the hook reports the pattern but writing it changes nothing. Refusing is the only
    answer that cannot mislead."""
    host = family_host(family)
    assert "pattern" in host.caps.missing
    ref = Runs(host, PAIRS["middle"]).sweep("head_pattern")
    np.testing.assert_allclose(ref, 0.0, atol=1e-6)  # normalised: corrupted = 0


@pytest.mark.parametrize("family", ["gpt_neox", "gptj", "phi", "falcon", "cohere"])
def test_parallel_blocks_have_no_resid_mid(family_host, family):
    host = family_host(family)
    assert host.caps.parallel_blocks and "resid_mid" in host.caps.missing
    with pytest.raises(InputError) as err:
        run_sweep(host, SweepRequest(PAIRS["middle"], "resid_mid"), Context())
    assert "parallel" in err.value.message and err.value.hint
