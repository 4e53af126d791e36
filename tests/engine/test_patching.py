"""Batched sweeps equal TransformerLens's own ``patching.get_act_patch_*`` on the same inputs."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from transformer_lens import patching as tlp

from engine.errors import InputError
from engine.jobs import Cancelled, Context
from engine.patching import Metric, PromptPair, SweepRequest, prepare_pairs, run_sweep

IOI = PromptPair("When John and Mary went to the store, John gave a drink to",
                 "When John and Mary went to the store, Mary gave a drink to", " Mary", " John")
IOI2 = PromptPair("When Alice and Bob went to the park, Alice gave a ball to",
                  "When Alice and Bob went to the park, Bob gave a ball to", " Bob", " Alice")

SHORT = PromptPair("When John and Mary went, John gave it to",
                   "When John and Mary went, Mary gave it to", " Mary", " John")

TL_FUNCS = {
    "resid_pre": tlp.get_act_patch_resid_pre,
    "resid_mid": tlp.get_act_patch_resid_mid,
    "attn_out": tlp.get_act_patch_attn_out,
    "mlp_out": tlp.get_act_patch_mlp_out,
    "head_out": tlp.get_act_patch_attn_head_out_all_pos,
    "head_out_by_pos": tlp.get_act_patch_attn_head_out_by_pos,
    "head_q": tlp.get_act_patch_attn_head_q_all_pos,
    "head_k": tlp.get_act_patch_attn_head_k_all_pos,
    "head_v": tlp.get_act_patch_attn_head_v_all_pos,
    "head_pattern": tlp.get_act_patch_attn_head_pattern_all_pos,
    "head_q_by_pos": tlp.get_act_patch_attn_head_q_by_pos,
    "head_k_by_pos": tlp.get_act_patch_attn_head_k_by_pos,
    "head_v_by_pos": tlp.get_act_patch_attn_head_v_by_pos,
    "head_pattern_by_pos": tlp.get_act_patch_attn_head_pattern_by_pos,
    "block": tlp.get_act_patch_block_every,
}


@torch.inference_mode()
def tl_reference(host, pairs, kind, metric_name="logit_diff_norm", direction="denoise"):
    """TransformerLens's function with the same metric (normalised with the same baselines)."""
    pb = prepare_pairs(host, pairs)
    metric = Metric(metric_name, pb)
    model = host.model
    rows = torch.arange(len(pairs))
    clean_logits, clean_cache = model.run_with_cache(pb.clean)
    corr_logits, corr_cache = model.run_with_cache(pb.corrupted)
    metric.set_baselines(clean_logits[rows, pb.positions], corr_logits[rows, pb.positions])
    base, cache = (pb.corrupted, clean_cache) if direction == "denoise" else (pb.clean, corr_cache)
    return TL_FUNCS[kind](model, base, cache, metric.full_logits_fn()).cpu().numpy()


def check(host, pairs, kind, **kw):
    ours = run_sweep(host, SweepRequest(tuple(pairs), kind, **kw), Context())
    ref = tl_reference(host, pairs, kind, kw.get("metric", "logit_diff_norm"),
                       kw.get("direction", "denoise"))
    assert ours.values.shape == ref.shape
    assert ours.complete and not np.isnan(ours.values).any()
    scale = float(np.abs(ref).max())
    assert np.ptp(ref) > 1e-3 * scale, "degenerate sweep: the comparison would prove nothing"
    # 1e-4 absolute on logit-scale metrics; relative for probabilities (all ~1e-3 on random models)
    np.testing.assert_allclose(ours.values, ref, atol=1e-4 * min(1.0, scale), rtol=1e-4)
    return ours


# resid_pre / attn_out / mlp_out are checked through "block" (get_act_patch_block_every stacks them)
@pytest.mark.parametrize("kind", [k for k in TL_FUNCS if k not in ("resid_pre", "attn_out",
                                                                   "mlp_out")])
def test_every_sweep_equals_transformer_lens(tiny_host, kind):
    check(tiny_host, [SHORT], kind)


def test_single_block_sweeps_equal_transformer_lens(tiny_host):
    for kind in ("resid_pre", "attn_out", "mlp_out"):
        check(tiny_host, [SHORT], kind)


@pytest.mark.parametrize("metric", ["logit_diff", "prob", "loss"])
def test_other_metrics_and_a_batch_of_pairs(tiny_host, metric):
    ours = check(tiny_host, [IOI, IOI2], "head_out", metric=metric)
    assert ours.metric == metric


def test_noising_direction(tiny_host):
    ours = check(tiny_host, [IOI], "attn_out", direction="noise")
    assert ours.clean_value == 1.0 and ours.corrupted_value == 0.0


@pytest.fixture(scope="module", params=[(3, 2, 32, 7), (4, 8, 64, 3)], ids=["3L2H", "4L8H"])
def shaped_host(request, tmp_path_factory):
    from engine.host import load_host
    from engine.model_sources import ModelSpec
    from tests.model_fixtures import make_gpt2_folder

    n_layer, n_head, d, seed = request.param
    folder = make_gpt2_folder(tmp_path_factory.mktemp("gpt2"), n_layer, n_head, d, 64, seed)
    return load_host(ModelSpec("folder", str(folder), "cpu"))


@pytest.mark.parametrize("kind", ["block", "head_out"])
def test_other_shapes_and_small_chunks(shaped_host, kind):
    """Chunks of 5 variants mix layers inside a chunk: start-at-layer must still be exact."""
    ours = check(shaped_host, [IOI, IOI2], kind, max_tokens_per_chunk=5 * 2 * 15)
    assert ours.chunk_size == 5


def test_bundled_model_agrees(bundled_host):
    for kind in ("resid_pre", "head_out"):
        check(bundled_host, [PromptPair("The cat sat on the mat", "The dog sat on the mat",
                                        " and", " the")], kind, metric="logit_diff")


def test_start_at_layer_is_used_and_matches_full_forward(tiny_host):
    fast = run_sweep(tiny_host, SweepRequest((IOI,), "head_out_by_pos"), Context())
    slow = run_sweep(tiny_host, SweepRequest((IOI,), "head_out_by_pos", start_at_layer=False),
                     Context())
    np.testing.assert_allclose(fast.values, slow.values, atol=1e-5)


def test_partial_results_stream_and_cancel_stops(tiny_host):
    seen = []

    class Ctx(Context):
        def partial(self, result):
            seen.append(result)
            self.cancel()

        def progress(self, fraction, message=""):
            super().progress(fraction, message)
            if fraction > 0.06 and not seen:  # force a partial after the first chunk
                self.partial_now = True

    ctx = Ctx()
    import engine.patching as mod

    real = mod.time.perf_counter
    ticks = iter(range(0, 10**6, 10))
    mod.time.perf_counter = lambda: float(next(ticks))  # every chunk looks 'slow': stream it
    try:
        with pytest.raises(Cancelled):
            run_sweep(tiny_host, SweepRequest((IOI,), "head_out_by_pos",
                                              max_tokens_per_chunk=15 * 4), ctx)
    finally:
        mod.time.perf_counter = real
    assert len(seen) == 1
    part = seen[0]
    assert not part.complete and 0 < part.done < part.total
    assert np.isfinite(part.values).sum() == part.done


def test_mismatched_lengths_name_the_offending_tokens(tiny_host):
    pair = PromptPair("When John and Mary went to the store", "When Alexander went to the store",
                      " Mary", " John")
    with pytest.raises(InputError) as err:
        run_sweep(tiny_host, SweepRequest((pair,), "head_out"), Context())
    assert "tokens" in err.value.message and "differ from position" in err.value.message
    assert "'" in err.value.message  # the extra tokens are quoted


def test_multi_token_answer_and_same_answer(tiny_host):
    with pytest.raises(InputError, match="tokens for this model"):
        run_sweep(tiny_host, SweepRequest((PromptPair(IOI.clean, IOI.corrupted,
                                                      " Maryxyzzy", " John"),)), Context())
    with pytest.raises(InputError, match="same token"):
        run_sweep(tiny_host, SweepRequest((PromptPair(IOI.clean, IOI.corrupted, " John",
                                                      " John"),)), Context())


def test_identical_prompts_refuse_the_normalised_metric(tiny_host):
    same = PromptPair(IOI.clean, IOI.clean, " Mary", " John")
    with pytest.raises(InputError, match="normalised metric is undefined"):
        run_sweep(tiny_host, SweepRequest((same,)), Context())


# -- patch plans -----------------------------------------------------------------------------------
def _hooked_metric(host, pairs, base, hooks, metric):
    """The plain TransformerLens way: one run_with_hooks, metric on its logits."""
    logits = host.model.run_with_hooks(base, fwd_hooks=hooks)
    return float(metric.full_logits_fn()(logits))


@torch.inference_mode()
def test_plan_together_and_alone_equal_run_with_hooks(tiny_host):
    from engine.patch_plan import PlanItem, PlanRequest, run_plan

    pairs = (IOI, IOI2)
    items = (PlanItem("z", 1, 2, (), "denoise"), PlanItem("resid_pre", 1, -1, (3, 14), "denoise"),
             PlanItem("embed", 0, -1, (10,), "denoise"), PlanItem("neuron", 0, 7, (), "zero"),
             PlanItem("attn_out", 0, -1, (), "mean"), PlanItem("v", 0, 1, (), "resample"))
    res = run_plan(tiny_host, PlanRequest(pairs, items), Context())
    pb = prepare_pairs(tiny_host, pairs)
    metric = Metric("logit_diff_norm", pb)
    model = tiny_host.model
    rows = torch.arange(2)
    cl, cc = model.run_with_cache(pb.clean)
    co, rc = model.run_with_cache(pb.corrupted)
    metric.set_baselines(cl[rows, pb.positions], co[rows, pb.positions])

    def hook_for(item):
        name = {"z": "blocks.{}.attn.hook_z", "resid_pre": "blocks.{}.hook_resid_pre",
                "embed": "hook_embed", "neuron": "blocks.{}.mlp.hook_post",
                "attn_out": "blocks.{}.hook_attn_out", "v": "blocks.{}.attn.hook_v"}[
                    item.component].format(item.layer)

        def fn(act, hook):
            pos = list(item.positions) if item.positions else slice(None)
            if item.mode == "denoise":
                src = cc[name]
            elif item.mode == "zero":
                src = torch.zeros_like(act)
            elif item.mode == "mean":
                src = torch.cat([rc[name], cc[name]]).mean(dim=(0, 1), keepdim=True).expand_as(act)
            else:
                src = torch.roll(cc[name], 1, dims=0)
            act = act.clone()
            if item.component in ("z", "v"):
                act[:, pos, item.index] = src[:, pos, item.index]
            elif item.component == "neuron":
                act[:, pos, item.index] = src[:, pos, item.index]
            else:
                act[:, pos] = src[:, pos]
            return act
        return name, fn

    together = _hooked_metric(tiny_host, pairs, pb.corrupted, [hook_for(i) for i in items], metric)
    alone = [_hooked_metric(tiny_host, pairs, pb.corrupted, [hook_for(i)], metric) for i in items]
    np.testing.assert_allclose(res.values, [together, *alone], atol=1e-4)
    assert res.labels[0] == "all together" and len(res.labels) == 1 + len(items)
    assert np.ptp(res.values) > 1e-3


def test_plan_bad_input(tiny_host):
    from engine.host import ModelInfo  # noqa: F401 - validate_plan takes the host's info
    from engine.patch_plan import PlanItem, PlanRequest, run_plan, validate_plan

    with pytest.raises(InputError, match="plan is empty"):
        run_plan(tiny_host, PlanRequest((IOI,), ()), Context())
    with pytest.raises(InputError, match="both denoises and noises"):
        run_plan(tiny_host, PlanRequest((IOI,), (PlanItem("z", 0, 0), PlanItem("z", 1, 0, (),
                                                                               "noise"))), Context())
    with pytest.raises(InputError, match="at least two pairs"):
        run_plan(tiny_host, PlanRequest((IOI,), (PlanItem("z", 0, 0, (), "resample"),)), Context())
    msgs = validate_plan([PlanItem("z", 5, 0), PlanItem("z", 1, 9), PlanItem("neuron", 0, 9999),
                          PlanItem("attn_out", 1)], tiny_host.info)
    assert len(msgs) == 3
    assert "Item 1" in msgs[0] and "2 layers" in msgs[0]
    assert "Item 2" in msgs[1] and "4 heads" in msgs[1]
    assert "Item 3" in msgs[2] and "256 neurons" in msgs[2]


# -- attribution patching -----------------------------------------------------------------------------
def test_attribution_estimate_is_the_directional_derivative(tiny_host):
    """The estimate for head (1, 2) equals d metric / d eps of z = corr + eps (clean - corr)."""
    from engine.attribution_patching import AttributionPatchRequest, run_attribution_patching

    est = run_attribution_patching(tiny_host, AttributionPatchRequest((SHORT,), "head_out"),
                                   Context())
    assert est.values.shape == (2, 4) and np.isfinite(est.values).all()
    pb = prepare_pairs(tiny_host, (SHORT,))
    metric = Metric("logit_diff_norm", pb)
    model = tiny_host.model
    rows = torch.arange(1)
    with torch.inference_mode():
        cl, cc = model.run_with_cache(pb.clean)
        co, rc = model.run_with_cache(pb.corrupted)
        metric.set_baselines(cl[rows, pb.positions], co[rows, pb.positions])
        fn = metric.full_logits_fn()
        def shifted(z, hook, name, head, eps):
            z = z.clone()
            z[:, :, head] = rc[name][:, :, head] + eps * (cc[name] - rc[name])[:, :, head]
            return z

        for layer, head in [(1, 2), (0, 1)]:
            name, eps = f"blocks.{layer}.attn.hook_z", 1e-3
            up, down = (float(fn(model.run_with_hooks(pb.corrupted, fwd_hooks=[
                (name, partial(shifted, name=name, head=head, eps=e))]))) for e in (eps, -eps))
            np.testing.assert_allclose(est.values[layer, head], (up - down) / (2 * eps),
                                       rtol=2e-2, atol=2e-3)


def test_verify_top_k_computes_only_those_cells(tiny_host):
    from engine.attribution_patching import correlation, top_k_cells

    full = run_sweep(tiny_host, SweepRequest((SHORT,), "head_out"), Context())
    cells = top_k_cells(full.values, 3)
    part = run_sweep(tiny_host, SweepRequest((SHORT,), "head_out", only=cells), Context())
    assert part.done == 3 and np.isfinite(part.values).sum() == 3
    # Equal up to float32 rounding: a batch of 3 variants may use other kernels than one of 16.
    np.testing.assert_allclose(part.values.ravel()[list(cells)], full.values.ravel()[list(cells)],
                               atol=1e-5)
    assert correlation(full.values, full.values) == pytest.approx(1.0)


def test_only_positions_after_the_first_difference_are_recomputed(shaped_host):
    """Pairs that agree up to a position: patched runs recompute only the positions from there
    (the suffix forward, checked against the full forward per model), same numbers as TL."""
    early = PromptPair("John gave a drink to Mary and then went home, and", "Mary gave a drink "
                       "to Mary and then went home, and", " John", " Mary")
    for pairs in ([IOI, IOI2], [early]):
        shaped_host.__dict__.pop("_patching_runner", None)  # a fresh runner: count from zero
        ours = check(shaped_host, pairs, "head_out")
        runner = shaped_host.__dict__["_patching_runner"][1]
        assert runner.suffix is not None
        pb = prepare_pairs(shaped_host, pairs)
        first = int((pb.clean != pb.corrupted).any(0).nonzero()[0])
        per_variant = runner.positions_computed / ours.total
        assert per_variant == runner.n_pos - first  # only the suffix, for every variant


def test_position_sweeps_recompute_only_from_the_patched_position(shaped_host, monkeypatch):
    """A patch at position p changes nothing before p (causal attention): the block sweep runs
    each cell over positions p.. only, and a cell before the prompts' first difference (which
    patches in the base run's own values) is not run at all; same numbers as TL."""
    early = PromptPair("John gave a drink to Mary and then went home, and", "Mary gave a drink "
                       "to Mary and then went home, and", " John", " Mary")
    late = PromptPair("John gave a drink to Mary and then went home with Mary, and", "John gave a "
                      "drink to Mary and then went home with John, and", " John", " Mary")
    from engine.patch_runner import PatchRunner

    # Every start position its own forward (by default small ones are merged for speed).
    monkeypatch.setattr(PatchRunner, "min_rows", 0)
    for pair in (early, late):
        shaped_host.__dict__.pop("_patching_runner", None)
        ours = check(shaped_host, [pair], "block")
        runner = shaped_host.__dict__["_patching_runner"][1]
        pb = prepare_pairs(shaped_host, [pair])
        first = int((pb.clean != pb.corrupted).any(0).nonzero()[0])
        n = runner.n_pos
        assert first >= 1 and int(pb.positions[0]) == n - 1
        per_layer = sum(n - p for p in range(first, n))
        assert runner.positions_computed == 3 * runner.n_layers * per_layer
        assert runner.positions_computed < 0.6 * ours.total * (n - first)


def test_variants_take_the_base_attention_at_their_own_layer(shaped_host):
    """A head-output patch at layer l leaves that layer's queries, keys and pattern as in the base
    run: a variant joining the staircase there takes the base run's z and patches it, so
    attention is computed only for variants that started below (and, in the last layer, at the
    answer position). Same numbers as TL's get_act_patch_attn_head_out_all_pos."""
    shaped_host.__dict__.pop("_patching_runner", None)
    ours = check(shaped_host, [IOI, IOI2], "head_out")
    runner = shaped_host.__dict__["_patching_runner"][1]
    n_layers, n_heads = runner.n_layers, ours.values.shape[1]
    assert ours.chunk_size >= n_layers * n_heads  # one forward: the count below is exact
    pb = prepare_pairs(shaped_host, [IOI, IOI2])
    suffix = runner.n_pos - int((pb.clean != pb.corrupted).any(0).nonzero()[0])
    below = [layer * n_heads for layer in range(n_layers)]  # variants started below each layer
    assert runner.suffix.query_rows == sum(below[:-1]) * suffix + below[-1]


def _block_sweep_in_one_forward(host, monkeypatch):
    """The block sweep of a pair differing early, every start position its own bucket, all in
    one forward (same numbers as TL): (runner, first difference, positions, layers)."""
    from engine.patch_runner import PatchRunner

    monkeypatch.setattr(PatchRunner, "min_rows", 0)
    early = PromptPair("John gave a drink to Mary and then went home, and", "Mary gave a drink "
                       "to Mary and then went home, and", " John", " Mary")
    host.__dict__.pop("_patching_runner", None)
    ours = check(host, [early], "block")
    runner = host.__dict__["_patching_runner"][1]
    assert ours.chunk_size >= ours.total  # one chunk: every start position holds every component
    pb = prepare_pairs(host, [early])
    first = int((pb.clean != pb.corrupted).any(0).nonzero()[0])
    return runner, first, runner.n_pos, runner.n_layers


def test_joining_variants_that_patch_after_z_take_the_base_attention_in_a_mixed_forward(
        shaped_host, monkeypatch):
    """In one forward holding resid_pre, attn_out and mlp_out cells of every layer (the block
    sweep, one forward per patched position), the cells joining at layer l that patch attn_out or
    mlp_out there still take the base run's attention: only the resid_pre cell joining there
    computes it, with the cells that started below. A cell's input differs from the base run's
    at its patched position alone in its first computed layer (l for resid_pre, l + 1 for
    attn_out and mlp_out): it is projected to queries, keys and values there only. Same numbers
    as TL."""
    runner, first, n, n_layers = _block_sweep_in_one_forward(shaped_host, monkeypatch)
    # Per position bucket p: at layer l >= 1 below the last, 3 * l cells started below, of which
    # the attn_out and mlp_out cells of layer l - 1 are projected at p only, as is the resid_pre
    # cell joining at l; the others over the bucket's n - p positions. The last layer runs the
    # answer query only.
    want = sum(1 + sum((3 * layer - 2) * (n - p) + 3 for layer in range(1, n_layers - 1))
               + 3 * (n_layers - 1) + 1 for p in range(first, n))
    assert runner.suffix.query_rows == want


def test_cells_joining_with_an_attn_out_patch_compute_their_mlp_at_the_patched_position_only(
        shaped_host, monkeypatch):
    """An attn_out patch at position p changes that layer's MLP input at p alone (the cell
    takes the base run's attention there): the MLP runs at p, the other positions take the base
    run's MLP output. Counted over a block sweep in one forward; same numbers as TL."""
    runner, first, n, n_layers = _block_sweep_in_one_forward(shaped_host, monkeypatch)
    # Per position bucket p, layer l below the last: 3 * l cells started below and the
    # resid_pre cell joining there over the n - p positions, the attn_out cell at p only, the
    # mlp_out cell not at all; the last layer at the answer position: every cell but mlp_out's.
    want = sum(sum((3 * layer + 1) * (n - p) + 1 for layer in range(n_layers - 1))
               + 3 * n_layers - 1 for p in range(first, n))
    assert runner.suffix.mlp_rows == want
