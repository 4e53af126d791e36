"""The exported TransformerLens script on other architecture families than GPT-2 (no BOS and
parallel blocks, grouped-query attention with RMSNorm, ALiBi): run in a fresh process, it prints
the engine's numbers for each analysis the script covers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.script_export import ScriptSpec, render
from engine.attention import AttentionRequest, run_attention
from engine.attribution import AttributionRequest, run_attribution
from engine.induction import InductionRequest, run_induction_scan
from engine.jobs import Context
from engine.patch_plan import PlanItem, PlanRequest, run_plan
from engine.patching import SweepRequest, run_sweep
from engine.prompt import PromptRequest, run_prompt
from tests.app.test_script_export import run_script
from tests.tl_reference import BASE, PAIRS, assert_spread

PLAN = [("z", 1, 2, [], "denoise"), ("mlp_out", 0, -1, [4], "zero")]


@pytest.mark.parametrize("family", ["gpt_neox", "llama", "bloom"])
@torch.inference_mode()
def test_script_prints_the_engines_numbers(family_host, family, tmp_path):
    host = family_host(family)
    ctx = Context()
    pair = PAIRS["middle"][0]
    pred = run_prompt(host, PromptRequest(BASE, 5), ctx)
    att = run_attention(host, AttentionRequest(prompts=(BASE,)), ctx)
    attr = run_attribution(host, AttributionRequest.single(BASE, " Mary", " John"), ctx)
    sweep = run_sweep(host, SweepRequest((pair,), "head_out"), ctx)
    plan = run_plan(host, PlanRequest((pair,), tuple(PlanItem(c, la, ix, tuple(ps), m)
                                                     for c, la, ix, ps, m in PLAN)), ctx)
    scan = run_induction_scan(host, InductionRequest(seq_len=6, batch=2, prompt=BASE), ctx)
    spec = ScriptSpec(model=host.info.folder, model_label=family, device="cpu",
                      prepend_bos=host.info.default_prepend_bos, prompt=BASE, top_k=5,
                      head=(1, 1), attribution=(" Mary", " John", -1),
                      pairs=[(pair.clean, pair.corrupted, pair.answer, pair.counterfactual)],
                      sweep="head_out", plan=PLAN,
                      rep_tokens=scan.rep_tokens.tolist(), prompt_scores=True,
                      detector_options={"exclude_bos": False, "exclude_current_token": False,
                                        "error_measure": "mul"})
    path = tmp_path / "analysis.py"
    path.write_text(render(spec))
    got = run_script(path)
    assert got["predictions.str_tokens"] == list(pred.str_tokens)
    np.testing.assert_allclose(got["predictions.top_probs"], pred.top_probs, atol=1e-4)
    np.testing.assert_allclose(got["predictions.loss_per_token"], pred.loss_per_token, atol=1e-4)
    np.testing.assert_allclose(got["attention.pattern.L1H1"], att.items[0].patterns[1, 1],
                               atol=1e-4)
    np.testing.assert_allclose(got["attribution.logit_lens"], attr.lens_values[0], atol=1e-4)
    assert_spread(attr.lens_values[0], "logit lens")
    labels = list(attr.component_labels)
    shown = np.isfinite(attr.component_values[0])
    assert labels == got["attribution.component_labels"]
    assert shown.any()
    np.testing.assert_allclose(np.asarray(got["attribution.components"])[shown],
                               attr.component_values[0][shown], atol=1e-4)
    assert np.isfinite(attr.head_values[0]).all()
    np.testing.assert_allclose(got["attribution.heads"], attr.head_values[0], atol=1e-4)
    np.testing.assert_allclose(got["patching.head_out"], sweep.values, atol=1e-4)
    assert_spread(sweep.values, "head sweep")
    np.testing.assert_allclose(got["patching.plan"], plan.values, atol=1e-4)
    for kind in ("previous", "duplicate", "induction_detector"):
        np.testing.assert_allclose(got[f"induction.repeated.{kind}"], scan.repeated[kind],
                                   atol=1e-4)
    if host.info.default_prepend_bos:
        np.testing.assert_allclose(got["induction.prompt.induction"],
                                   scan.prompt_scores["induction"], atol=1e-4)
