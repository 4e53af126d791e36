"""The patching shortcuts are used only after a check that runs them *with patches* against the
hooked forward, and a shortcut that breaks mid-job hands the work to the exact path. Each test
sabotages one shortcut in a way an unpatched check would not notice."""

from __future__ import annotations

import numpy as np
import pytest

import engine.patch_runner as pr
from engine.jobs import Context
from engine.patching import SweepRequest, run_sweep
from engine.suffix_forward import SuffixForward
from tests.tl_reference import PAIRS, Runs


@pytest.fixture()
def fresh(tiny_host):
    """The tiny GPT-2 host with no remembered verdicts or cached runners."""
    for key in ("_patching_shortcuts_exact", "_patching_runner"):
        tiny_host.__dict__.pop(key, None)
    yield tiny_host
    for key in ("_patching_shortcuts_exact", "_patching_runner"):
        tiny_host.__dict__.pop(key, None)


def _exact(host, kind, pairs, res):
    ref = Runs(host, PAIRS[pairs]).sweep(kind)
    np.testing.assert_allclose(res.values, ref, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


def test_a_suffix_forward_that_ignores_patches_is_rejected(fresh, monkeypatch):
    real = SuffixForward.__call__

    def ignores_patches(self, starts, patches, p0, answer_pos, **kw):
        return real(self, starts, {}, p0, answer_pos, **kw)  # unpatched runs still match

    monkeypatch.setattr(SuffixForward, "__call__", ignores_patches)
    res = run_sweep(fresh, SweepRequest(PAIRS["middle"], "head_out"), Context())
    assert "prefix keys and values cached" not in res.path
    _exact(fresh, "head_out", "middle", res)


def test_block_arguments_not_expanded_for_stacked_variants_are_caught(fresh, monkeypatch):
    """Like BLOOM's ALiBi bias before it was expanded: one variant works, several do not."""
    monkeypatch.setattr(pr, "_expand", lambda obj, n_pairs, times, key="": obj)
    res = run_sweep(fresh, SweepRequest(PAIRS["two_pairs"], "head_out"), Context())
    assert "full hooked forward" in res.path and "patched layer on" not in res.path
    _exact(fresh, "head_out", "two_pairs", res)


def test_a_shortcut_failing_mid_job_falls_back_to_the_exact_path(fresh, monkeypatch):
    calls = {"n": 0}
    real = pr.PatchRunner._run_shortcuts

    def flaky(self, group, starts):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("shape mismatch in a stacked chunk")
        return real(self, group, starts)

    monkeypatch.setattr(pr.PatchRunner, "_run_shortcuts", flaky)
    res = run_sweep(fresh, SweepRequest(PAIRS["first"], "head_out_by_pos",
                                        max_tokens_per_chunk=5 * 12), Context())
    assert calls["n"] == 2 and res.complete
    assert "a shortcut failed" in res.path and "full hooked forward" in res.path
    _exact(fresh, "head_out_by_pos", "first", res)


def test_the_verdict_is_kept_per_model_and_prompt_shape(fresh, monkeypatch):
    checks = []
    real = pr.PatchRunner._check_shortcuts

    def counted(self, variants, p_start):
        checks.append(len(variants))
        assert len(variants) >= 3 and any(len(v.patches) == 2 for v in variants)
        return real(self, variants, p_start)

    monkeypatch.setattr(pr.PatchRunner, "_check_shortcuts", counted)
    run_sweep(fresh, SweepRequest(PAIRS["middle"], "head_out"), Context())
    run_sweep(fresh, SweepRequest(PAIRS["middle"], "block", metric="logit_diff"), Context())
    assert len(checks) == 1


def test_without_sabotage_the_shortcuts_are_used(fresh):
    """The control for the tests above: on this model both shortcuts pass their checks."""
    res = run_sweep(fresh, SweepRequest(PAIRS["middle"], "head_out"), Context())
    assert "prefix keys and values cached" in res.path
    res = run_sweep(fresh, SweepRequest(PAIRS["two_pairs"], "head_out"), Context())
    assert "patched layer on" in res.path and "full hooked forward" not in res.path
    _exact(fresh, "head_out", "two_pairs", res)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama", "gemma", "qwen2", "phi",
                                    "falcon", "stablelm"])
def test_the_fast_forward_covers_the_common_block_forms(family_host, family):
    """Rotary (full and partial), grouped- and multi-query attention, gated MLPs and parallel
    blocks all run through the hand-written forward (and pass its check with patches); prompts
    that differ at their first token (no BOS: position 0) still use it over every position."""
    host = family_host(family)
    res = run_sweep(host, SweepRequest(PAIRS["middle"], "head_out"), Context())
    assert "prefix keys and values cached" in res.path, res.path
    res = run_sweep(host, SweepRequest(PAIRS["first"], "head_out"), Context())
    fast = "prefix keys" if host.info.default_prepend_bos else "fused dense layers"
    assert fast in res.path and "full hooked" not in res.path, res.path
