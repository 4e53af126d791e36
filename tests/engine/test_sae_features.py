"""Dashboards, logit effects, feature attribution, interventions and feature patches, each
against a direct computation or TransformerLens's own functions."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from engine.errors import InputError
from engine.jobs import Context
from engine.patch_pairs import PromptPair
from engine.patch_plan import PlanItem, PlanRequest, run_plan
from engine.sae_attribution import FeatureAttributionRequest, run_feature_attribution
from engine.sae_features import HIST_EDGES, DashboardRequest, logit_effects, run_dashboards
from engine.sae_io import get_sae
from engine.sae_prompt import (
    InterventionRequest,
    PromptFeaturesRequest,
    run_intervention,
    run_prompt_features,
)
from engine.sae_splice import FeatureEdit
from engine.targets import Target
from engine.text_source import TextSource, token_rows
from tests.engine.test_sae import direct_encode, random_weights, saelens6_cfg, write_saelens_folder
from tests.model_fixtures import CORPUS

PROMPT = "When John and Mary went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def saes(tmp_path_factory):
    """Random SAEs at four kinds of hook of the tiny model (2 layers, d 64, d_mlp 256)."""
    root = tmp_path_factory.mktemp("saes")
    out = {}
    for hook, d_in in (("blocks.1.hook_resid_pre", 64), ("blocks.0.mlp.hook_post", 256),
                       ("blocks.1.attn.hook_z", 64), ("blocks.0.hook_mlp_out", 64)):
        w = random_weights(d_in, 160, seed=len(out))
        w["b_enc"] = w["b_enc"] - 0.15  # sparser
        write_saelens_folder(root / hook, saelens6_cfg(d_in, 160, hook), w)
        out[hook] = root / hook
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(1)
    words = " ".join(CORPUS).split()
    path = tmp_path_factory.mktemp("corpus") / "c.txt"
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(4, 25)))
                              for _ in range(600)))
    return path


def test_dashboards_equal_a_brute_force_pass_and_are_cached(tiny_host, saes, corpus, tmp_path):
    folder = saes["blocks.1.hook_resid_pre"]
    source = TextSource("file", str(corpus))
    req = DashboardRequest(str(folder), source, n_tokens=6000, context_size=32, top_k=5,
                           cache_dir=str(tmp_path / "cache"), tokens_per_batch=1024)
    stats = run_dashboards(tiny_host, req, Context())
    assert not stats.from_cache
    sae = get_sae(tiny_host, folder).sae
    rows = torch.cat(list(token_rows(tiny_host, source, 32, 6000, 64)))
    with torch.inference_mode():
        _, cache = tiny_host.model.run_with_cache(rows, names_filter=sae.cfg.hook_name)
        f = sae.encode(cache[sae.cfg.hook_name]).reshape(-1, 160)
    assert stats.n_tokens == rows.numel()
    np.testing.assert_allclose(stats.density, (f > 0).float().mean(0).numpy(), atol=1e-6)
    np.testing.assert_allclose(stats.max_act, f.max(0).values.numpy(), atol=1e-5)
    fires = (f > 0).sum(0)
    mean = torch.where(fires > 0, f.sum(0) / fires.clamp(min=1), 0).numpy()
    np.testing.assert_allclose(stats.mean_act, mean, rtol=1e-4, atol=1e-6)
    j = int(fires.argmax())
    logs = np.log10(f[:, j][f[:, j] > 0].numpy())
    want_hist = np.histogram(np.clip(logs, HIST_EDGES[0], HIST_EDGES[-1] - 1e-6), HIST_EDGES)[0]
    np.testing.assert_array_equal(stats.hist[j], want_hist)
    top = f.T.topk(5, dim=1).values.numpy()
    np.testing.assert_allclose(stats.top_acts, top, atol=1e-5)
    c = stats.window_center
    live = stats.top_acts > 0
    np.testing.assert_allclose(stats.window_acts[:, :, c][live], stats.top_acts[live], atol=1e-6)
    # each top context's window is the real text around it: find it in the rows
    flat_tokens = rows.reshape(-1).numpy()
    k = int(np.argmax(stats.top_acts[j] > 0))
    where = np.nonzero(np.isclose(f[:, j].numpy(), stats.top_acts[j, k], atol=1e-6))[0][0]
    row, pos = divmod(int(where), 32)
    window = stats.window_tokens[j, k]
    for o, tok in enumerate(window):
        p = pos + o - c
        assert tok == (flat_tokens[row * 32 + p] if 0 <= p < 32 else -1)
    again = run_dashboards(tiny_host, req, Context())
    assert again.from_cache and again.key == stats.key
    np.testing.assert_array_equal(again.window_tokens, stats.window_tokens)
    # an SAE folder may ship its dashboards (as the bundled SAE does)
    import shutil

    path = tmp_path / "cache" / f"{stats.key}.safetensors"
    (folder / "dashboards").mkdir()
    shutil.copy(path, folder / "dashboards" / path.name)
    path.unlink()
    shipped = run_dashboards(tiny_host, req, Context())
    assert shipped.from_cache and np.array_equal(shipped.top_acts, stats.top_acts)
    shutil.rmtree(folder / "dashboards")
    # a damaged cache file is rebuilt, not trusted
    run_dashboards(tiny_host, req, Context())
    path.write_bytes(path.read_bytes()[:100])
    assert not run_dashboards(tiny_host, req, Context()).from_cache
    # cache_only: the cached result or None, never a computation
    other = DashboardRequest(str(folder), source, n_tokens=5000, context_size=32, top_k=5,
                             cache_dir=str(tmp_path / "cache"), cache_only=True)
    assert run_dashboards(tiny_host, other, Context()) is None


@torch.inference_mode()
def test_logit_effects_are_decoder_directions_through_the_unembedding(tiny_host, saes):
    model = tiny_host.model
    for hook in ("blocks.1.hook_resid_pre", "blocks.0.mlp.hook_post", "blocks.1.attn.hook_z"):
        loaded = get_sae(tiny_host, saes[hook])
        eff = logit_effects(tiny_host, loaded, n=5)
        w_dec = loaded.sae.W_dec.detach()
        if hook.endswith("hook_post"):
            w_dec = w_dec @ model.W_out[0]
        elif hook.endswith("hook_z"):
            w_dec = w_dec @ model.W_O[1].reshape(64, 64)
        full = w_dec @ model.W_U
        np.testing.assert_allclose(eff.top_values, full.topk(5).values.numpy(), rtol=1e-4,
                                   atol=1e-5)
        np.testing.assert_allclose(eff.bottom_values, (-full).topk(5).values.neg().numpy(),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_pre", "blocks.0.mlp.hook_post",
                                  "blocks.1.attn.hook_z", "blocks.0.hook_mlp_out"])
@pytest.mark.parametrize("cf", ["", " Bob"])
@torch.inference_mode()
def test_feature_attribution_sums_to_the_components_dla(tiny_host, saes, hook, cf):
    from transformer_lens.tools.analysis import direct_logit_attribution

    req = FeatureAttributionRequest(PROMPT, str(saes[hook]), Target(" Mary", cf))
    r = run_feature_attribution(tiny_host, req, Context())
    total = r.effects.sum(0) + r.rest + r.bias + r.error
    np.testing.assert_allclose(total, r.component, atol=2e-4 * max(1, np.abs(r.component).max()))
    # the component's DLA is TransformerLens's, at every position
    model = tiny_host.model
    tokens = model.to_tokens(PROMPT)
    _, cache = model.run_with_cache(tokens)
    a = model.to_single_token(" Mary")
    c = model.to_single_token(cf) if cf else None
    unit = "layer" if "resid" in hook else "component"
    dla = direct_logit_attribution(model, cache=cache, answer_tokens=a, incorrect_tokens=c,
                                   unit=unit, pos=None)
    np.testing.assert_allclose(r.component, dla.attribution[list(dla.labels).index(
        r.component_label)].reshape(-1).numpy(), atol=1e-5)
    # one feature's effect: its activation times its direction, through logit_attrs
    sae = get_sae(tiny_host, saes[hook]).sae
    i, p = int(r.features[0]), r.position
    vec = r.activations[0, p] * sae.W_dec[i].detach()
    if hook.endswith("hook_post"):
        vec = vec @ model.W_out[0]
    elif hook.endswith("hook_z"):
        vec = vec @ model.W_O[1].reshape(64, 64)
    stack = torch.zeros(1, 1, len(r.str_tokens), 64)
    stack[0, 0, p] = vec
    want = cache.logit_attrs(stack, tokens=a, incorrect_tokens=c, pos_slice=None,
                             has_batch_dim=True)[0, 0, p]
    assert r.effects[0, p] == pytest.approx(float(want), abs=1e-5)
    assert abs(r.effects[0, p]) >= np.abs(r.effects[:, p]).max() - 1e-9  # ranked


@torch.inference_mode()
def test_prompt_features_and_intervention_match_direct_hooks(tiny_host, saes):
    model = tiny_host.model
    folder = str(saes["blocks.1.hook_resid_pre"])
    pf = run_prompt_features(tiny_host, PromptFeaturesRequest(PROMPT, folder), Context())
    sae = get_sae(tiny_host, folder).sae
    tokens = model.to_tokens(PROMPT)
    _, cache = model.run_with_cache(tokens, names_filter=sae.cfg.hook_name)
    x = cache[sae.cfg.hook_name][0]
    w = {k: v.detach() for k, v in sae.named_parameters()}
    f = direct_encode(x, w)
    np.testing.assert_allclose(pf.acts, f.numpy(), atol=1e-5)
    np.testing.assert_allclose(pf.error_norm, (x - f @ w["W_dec"] - w["b_dec"]).norm(dim=-1),
                               atol=1e-4)
    top = pf.top_at(5, 3)
    assert [i for i, _ in top] == [int(i) for i in f[5].topk(len(top)).indices]
    feat = top[0][0]
    edits = (FeatureEdit(feat, "ablate", positions=(5,)), FeatureEdit(7, "steer", 3.0))
    r = run_intervention(tiny_host, InterventionRequest(PROMPT, folder, edits, top_k=5,
                                                        answer=" Mary"), Context())
    delta = torch.zeros_like(x)
    delta[5] -= f[5, feat] * w["W_dec"][feat]
    delta += 3.0 * w["W_dec"][7]
    after = model.run_with_hooks(tokens, fwd_hooks=[(sae.cfg.hook_name,
                                                     lambda a, hook: a + delta)])[0]
    probs = torch.softmax(after[-1], -1).topk(5).values.numpy()
    np.testing.assert_allclose(r.after_probs, probs, atol=1e-5)
    assert r.target_after == pytest.approx(float(after[-1, model.to_single_token(" Mary")]),
                                           abs=1e-4)
    assert r.labels == (f"ablate F{feat} @5", "steer F7 +3")
    assert (r.kl >= -1e-6).all() and r.kl.max() > 0
    with pytest.raises(InputError, match="features 0-159"):
        run_intervention(tiny_host, InterventionRequest(PROMPT, folder,
                                                        (FeatureEdit(160, "ablate"),)), Context())
    with pytest.raises(InputError, match="past the prompt"):
        run_intervention(tiny_host, InterventionRequest(PROMPT, folder,
                                                        (FeatureEdit(1, "clamp", 1.0, (99,)),)),
                         Context())


@torch.inference_mode()
def test_feature_patch_in_a_plan_changes_only_that_feature(tiny_host, saes):
    model = tiny_host.model
    hook = "blocks.1.hook_resid_pre"
    folder = str(saes[hook])
    sae = get_sae(tiny_host, folder).sae
    w = {k: v.detach() for k, v in sae.named_parameters()}
    pair = PromptPair(PROMPT, PROMPT.replace("John gave", "Mary gave"), " Mary", " John")
    clean, corr = model.to_tokens(pair.clean), model.to_tokens(pair.corrupted)
    _, cc = model.run_with_cache(clean, names_filter=hook)
    _, rc = model.run_with_cache(corr, names_filter=hook)
    f_clean, f_corr = direct_encode(cc[hook], w), direct_encode(rc[hook], w)
    feat = int((f_clean - f_corr).abs().sum((0, 1)).argmax())
    item = PlanItem("feature", 1, feat, (), "denoise", sae=folder)
    head = PlanItem("z", 0, 2, (), "denoise")
    r = run_plan(tiny_host, PlanRequest((pair,), (item, head), "logit_diff"), Context())
    a, c = model.to_single_token(" Mary"), model.to_single_token(" John")

    def ld(logits):
        return float(logits[0, -1, a] - logits[0, -1, c])

    delta = (f_clean[..., feat] - f_corr[..., feat])[..., None] * w["W_dec"][feat]
    alone = model.run_with_hooks(corr, fwd_hooks=[(hook, lambda x, hook: x + delta)])
    assert r.values[1] == pytest.approx(ld(alone), abs=1e-4)
    _, zc = model.run_with_cache(clean, names_filter="blocks.0.attn.hook_z")
    z_clean = zc["blocks.0.attn.hook_z"]

    def patch_z(z, hook):
        z = z.clone()
        z[:, :, 2] = z_clean[:, :, 2]
        return z

    def feature_on_current(x, hook):  # the feature read from the activation this run has
        f_now = direct_encode(x, w)[..., feat]
        return x + (f_clean[..., feat] - f_now)[..., None] * w["W_dec"][feat]

    together = model.run_with_hooks(corr, fwd_hooks=[("blocks.0.attn.hook_z", patch_z),
                                                     (hook, feature_on_current)])
    assert r.values[0] == pytest.approx(ld(together), abs=1e-4)
    assert r.labels[1].startswith(f"F{feat} (")
    with pytest.raises(InputError, match="does not exist"):
        run_plan(tiny_host, PlanRequest((pair,), (PlanItem("feature", 1, 999, sae=folder),),
                                        "logit_diff"), Context())
