"""Every analysis besides sweeps, on every architecture family, against TransformerLens's own
functions: attention patterns, logit lens, direct logit attribution (by layer, component and
head), path patching, attribution patching, patch plans, induction scores and ablation. Where an
analysis is not defined on an architecture, it says so instead of showing a number."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from transformer_lens import patching as tlp
from transformer_lens.head_detector import detect_head
from transformer_lens.tools.analysis import direct_logit_attribution, logit_lens
from transformer_lens.tools.analysis.attribution_patching import (
    EdgeAttributionConfig,
    attribution_patch,
)

from engine.attention import AttentionRequest, run_attention
from engine.attribution import AttributionRequest, run_attribution
from engine.attribution_patching import AttributionPatchRequest, run_attribution_patching
from engine.errors import InputError
from engine.induction import (
    AblationRequest,
    InductionRequest,
    run_induction_ablation,
    run_induction_scan,
)
from engine.jobs import Context
from engine.patch_plan import PlanItem, PlanRequest, run_plan
from engine.path_patching import PathPatchRequest, run_path_patching
from engine.targets import Target, resolve_target
from engine.tokens import tokenize
from tests.model_matrix import FAMILIES
from tests.tl_reference import BASE, PAIRS, Runs, assert_spread

ALL = tuple(FAMILIES)


@pytest.mark.parametrize("family", ALL)
@torch.inference_mode()
def test_attention_patterns_equal_the_cache(family_host, family):
    host = family_host(family)
    res = run_attention(host, AttentionRequest(prompts=(BASE,)), Context())
    _, cache = host.model.run_with_cache(tokenize(host, BASE))
    for layer in range(host.info.n_layers):
        np.testing.assert_allclose(res.items[0].patterns[layer],
                                   cache["pattern", layer][0].float().numpy(), atol=1e-6)
    assert res.items[0].str_tokens[0] != " John" or not host.info.default_prepend_bos


@pytest.mark.parametrize("family", ALL)
@torch.inference_mode()
def test_logit_lens_and_direct_logit_attribution(family_host, family):
    host, model = family_host(family), family_host(family).model
    res = run_attribution(host, AttributionRequest.single(BASE, " Mary", " John"), Context())
    tokens = tokenize(host, BASE)
    t = resolve_target(host, Target(" Mary", " John"), tokens.shape[-1])
    logits, cache = model.run_with_cache(tokens)
    with_mid = not host.caps.parallel_blocks
    lens = logit_lens(model, cache=cache, incl_mid=with_mid, positions=t.position,
                      targets=[t.answer_id, t.counterfactual_id])
    want = (lens.values[:, 0, 0] - lens.values[:, 0, 1]).float().numpy()
    assert tuple(lens.labels) == res.lens_labels
    assert_spread(want, "logit lens")
    np.testing.assert_allclose(res.lens_values[0], want, atol=1e-4)
    if any("Direct logit attribution is not available" in n for n in res.notes):
        # TransformerLens refuses DLA on this model (e.g. a final norm it cannot fold): no number.
        with pytest.raises(ValueError):
            direct_logit_attribution(model, cache=cache, answer_tokens=t.answer_id, unit="head")
        assert np.isnan(res.component_values).all() and np.isnan(res.head_values).all()
        assert np.isnan(res.lens_direct).all()
        return
    # Components: TransformerLens's labels and values; the direct attributions of the
    # accumulated stream end at the model's own logit difference (minus b_U) unless it is capped.
    comp = direct_logit_attribution(model, cache=cache, answer_tokens=t.answer_id,
                                    incorrect_tokens=t.counterfactual_id, unit="component",
                                    pos=t.position)
    values = dict(zip(res.component_labels, res.component_values[0], strict=True))
    final = float(res.final_values[0] - res.bias_values[0])
    if host.caps.logit_softcap:
        assert any("soft-caps" in n for n in res.notes)
    else:
        assert res.lens_direct[0, -1] == pytest.approx(final, abs=1e-3)
    if np.isnan(res.component_values).all():
        assert any("do not add up" in n for n in res.notes)
    else:
        for label, ref in zip(comp.labels, comp.attribution.reshape(len(comp.labels), -1)[:, 0],
                              strict=True):
            assert values[label] == pytest.approx(float(ref), abs=1e-4)
        assert res.component_values[0].sum() == pytest.approx(res.lens_direct[0, -1], abs=1e-3)
    if with_mid:
        layer = direct_logit_attribution(model, cache=cache, answer_tokens=t.answer_id,
                                         incorrect_tokens=t.counterfactual_id, unit="layer",
                                         pos=t.position)
        np.testing.assert_allclose(res.lens_direct[0], layer.attribution[:, 0].float().numpy(),
                                   atol=1e-4)
    if host.caps.head_dla:
        assert np.isnan(res.head_values).all()
        assert any("Per-head attribution is not defined" in n for n in res.notes)
    else:
        heads = direct_logit_attribution(model, cache=cache, answer_tokens=t.answer_id,
                                         incorrect_tokens=t.counterfactual_id, unit="head",
                                         pos=t.position)
        ref = heads.attribution[:, 0].float().numpy()
        assert_spread(ref, "head DLA")
        np.testing.assert_allclose(res.head_values[0].ravel(), ref[:-1], atol=1e-4)
        assert res.head_remainder[0] == pytest.approx(float(ref[-1]), abs=1e-4)


# TransformerLens's direct-path function disagrees with its own hooked forward on these models
# (its split-q/k/v fork): the engine gives the hooked forward's number, and says how it computes.
TL_DIRECT_PATH_DIFFERS = {"bloom"}


@torch.inference_mode()
def _hooked_path_reference(host, runs, sender, component="q") -> np.ndarray:
    """Path patching by brute force with TransformerLens hooks, one receiver per forward: the
    receiver layer's input plus the sender's write gives that layer's q/k/v; one head of it is
    patched into the corrupted run."""
    model, info = host.model, host.info
    sl, sh = sender
    z = f"blocks.{sl}.attn.hook_z"
    delta = (runs.clean_cache[z][:, :, sh] - runs.corrupted_cache[z][:, :, sh]) \
        @ model.blocks[sl].attn.W_O[sh]
    width = runs.clean_cache[f"blocks.0.attn.hook_{component}"].shape[2]
    out = np.full((info.n_layers, width), np.nan)
    def add(x, hook):
        return x + delta

    def grab(x, hook, got):
        got["x"] = x.clone()

    def put(x, hook, head, got):
        x = x.clone()
        x[:, :, head] = got["x"][:, :, head]
        return x

    for layer in range(sl + 1, info.n_layers):
        name, got = f"blocks.{layer}.attn.hook_{component}", {}
        model.run_with_hooks(runs.pairs.corrupted, fwd_hooks=[
            (f"blocks.{layer}.hook_resid_pre", add), (name, partial(grab, got=got))])
        for head in range(width):
            logits = model.run_with_hooks(runs.pairs.corrupted, fwd_hooks=[
                (name, partial(put, head=head, got=got))])
            out[layer, head] = float(runs.metric.full_logits_fn()(logits))
    return out


@pytest.mark.parametrize("family", ALL)
def test_path_patching_equals_get_act_patch_direct_path(family_host, family):
    """Equal to TransformerLens's ``get_act_patch_direct_path`` where it runs, and to the same
    computation through TransformerLens's hooks everywhere; refused where a head's write to the
    residual stream is not its own z·W_O. (The raw logit difference: the normalised metric
    divides by a random model's tiny clean-corrupted gap and magnifies float32 rounding.)"""
    host = family_host(family)
    runs = Runs(host, PAIRS["middle"], "logit_diff")
    request = PathPatchRequest(PAIRS["middle"], ((0, 1),), "q", metric="logit_diff")
    if host.caps.head_dla:
        with pytest.raises(InputError) as err:
            run_path_patching(host, request, Context())
        assert host.caps.head_dla in err.value.message
        with pytest.raises(ValueError), torch.inference_mode():  # TransformerLens refuses too
            tlp.get_act_patch_direct_path(
                host.model, runs.pairs.corrupted, runs.clean_cache, runs.corrupted_cache,
                runs.metric.full_logits_fn(), 0, 1, component="q", verbose=False)
        return
    res = run_path_patching(host, request, Context())
    assert np.isnan(res.receivers[0]).all() and res.path
    hooked = _hooked_path_reference(host, runs, (0, 1))
    scale = assert_spread(hooked[1:], "path patching")
    np.testing.assert_allclose(res.receivers[1:], hooked[1:], atol=1e-5 * max(1.0, scale))
    try:
        with torch.inference_mode():
            ref = tlp.get_act_patch_direct_path(
                host.model, runs.pairs.corrupted, runs.clean_cache, runs.corrupted_cache,
                runs.metric.full_logits_fn(), 0, 1, component="q", verbose=False).numpy()
    except NotImplementedError:  # no split-q/k/v fork on this bridge: the hooks are the reference
        return
    close = np.allclose(res.receivers[1:], ref[1:], atol=1e-4 * max(1.0, scale))
    assert close != (family in TL_DIRECT_PATH_DIFFERS)


@pytest.mark.parametrize("family", ["llama", "gemma", "qwen2", "gpt_bigcode", "falcon"])
def test_path_patching_into_shared_keys_and_values(family_host, family):
    """On a grouped- or multi-query model a sender's write reaches the k/v input that a group of
    query heads shares: one receiver per key/value head (TransformerLens's own function refuses
    k/v there), equal to the same computation through TransformerLens's hooks."""
    host = family_host(family)
    runs = Runs(host, PAIRS["middle"], "logit_diff")
    res = run_path_patching(host, PathPatchRequest(PAIRS["middle"], ((0, 1),), "v",
                                                   metric="logit_diff"), Context())
    assert res.receiver_axis == "kv_head"
    assert res.receivers.shape[1] == host.info.n_key_value_heads < host.info.n_heads
    hooked = _hooked_path_reference(host, runs, (0, 1), "v")
    scale = assert_spread(hooked[1:], "k/v path patching")
    np.testing.assert_allclose(res.receivers[1:], hooked[1:], atol=1e-5 * max(1.0, scale))


@pytest.mark.parametrize("family", ALL)
def test_attribution_patching_equals_attribution_patch(family_host, family):
    """The linear estimate per head (summed over positions) and per MLP and position equals
    TransformerLens's node-level ``attribution_patch``."""
    host = family_host(family)
    pairs = PAIRS["middle"]
    heads = run_attribution_patching(host, AttributionPatchRequest(pairs, "head_out"), Context())
    mlp = run_attribution_patching(host, AttributionPatchRequest(pairs, "mlp_out"), Context())
    runs = Runs(host, pairs)
    fn = runs.metric.full_logits_fn()
    with torch.enable_grad():
        tl = attribution_patch(host.model, runs.pairs.clean, runs.pairs.corrupted, fn,
                               EdgeAttributionConfig(granularity="node"))
    ref_heads = np.zeros_like(heads.values)
    ref_mlp = np.zeros_like(mlp.values)
    for node, score in tl.node_scores.items():
        if node.kind == "attn_head_out":
            ref_heads[node.layer, node.head] += score
        elif node.kind == "mlp_out":
            ref_mlp[node.layer, node.position] = score
    assert_spread(ref_heads, "head estimates")
    np.testing.assert_allclose(heads.values, ref_heads, atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(mlp.values, ref_mlp, atol=1e-4, rtol=1e-3)


HOOK = {"z": "blocks.{}.attn.hook_z", "mlp_out": "blocks.{}.hook_mlp_out",
        "k": "blocks.{}.attn.hook_k", "resid_pre": "blocks.{}.hook_resid_pre",
        "neuron": "blocks.{}.mlp.hook_post"}


@pytest.mark.parametrize("family", ALL)
@torch.inference_mode()
def test_plans_equal_run_with_hooks(family_host, family):
    host = family_host(family)
    pairs = PAIRS["two_pairs"]
    last = host.info.n_layers - 1
    items = (PlanItem("z", 1, 2), PlanItem("mlp_out", 0, -1, (8,)), PlanItem("k", last, 0),
             PlanItem("resid_pre", last, -1, (3,)), PlanItem("neuron", 0, 5, (), "zero"))
    res = run_plan(host, PlanRequest(pairs, items), Context())
    runs = Runs(host, pairs)

    def hook_for(item):
        name = HOOK[item.component].format(item.layer)
        src = runs.clean_cache[name]

        def fn(act, hook):
            act = act.clone()
            pos = list(item.positions) if item.positions else slice(None)
            value = torch.zeros_like(act) if item.mode == "zero" else src
            if item.index >= 0:
                act[:, pos, item.index] = value[:, pos, item.index]
            else:
                act[:, pos] = value[:, pos]
            return act
        return name, fn

    def hooked(hooks):
        return float(runs.metric.full_logits_fn()(host.model.run_with_hooks(
            runs.pairs.corrupted, fwd_hooks=hooks)))

    want = [hooked([hook_for(i) for i in items]), *[hooked([hook_for(i)]) for i in items]]
    assert_spread(np.array(want), "plan")
    np.testing.assert_allclose(res.values, want, atol=1e-4)
    assert res.path


@pytest.mark.parametrize("family", ALL)
@torch.inference_mode()
def test_induction_scores_and_ablation(family_host, family):
    host = family_host(family)
    prompt = "When John and Mary went, John gave it to John and Mary"
    res = run_induction_scan(host, InductionRequest(seq_len=6, batch=3, prompt=prompt),
                             Context())
    for name, tl_name in (("previous", "previous_token_head"),
                          ("duplicate", "duplicate_token_head"),
                          ("induction", "induction_head")):
        ref = detect_head(host.model, prompt, tl_name)
        np.testing.assert_allclose(res.prompt_scores[name], ref.float().numpy(), atol=1e-5)
    heads = ((1, 0), (2, 3))
    ab = run_induction_ablation(host, AblationRequest(heads, seq_len=6, batch=3,
                                                      control_sets=1), Context())
    rep = torch.tensor(res.rep_tokens)

    def zero(head):
        def hook(z, hook):
            z = z.clone()
            z[:, :, head] = 0
            return z
        return hook

    logits = host.model.run_with_hooks(rep, fwd_hooks=[
        (f"blocks.{layer}.attn.hook_z", zero(head)) for layer, head in heads])
    lp = torch.log_softmax(logits.float(), -1)
    loss = -lp[:, :-1].gather(-1, rep[:, 1:, None])[..., 0].mean(0).numpy()
    np.testing.assert_allclose(ab.loss_ablated, loss, atol=1e-4)
