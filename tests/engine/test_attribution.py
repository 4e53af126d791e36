"""run_attribution against TransformerLens's own logit lens and DLA on the same model and prompt."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.attribution import AttributionItem, AttributionRequest, run_attribution
from engine.errors import InputError
from engine.jobs import Cancelled, Context
from engine.targets import Target

IOI = "When John and Mary went to the store, John gave a drink to"
IOI2 = "Alice and Bob walked to the park, and Alice gave a ball to"


def bundled_is_trained() -> bool:
    """The trainer writes checkpoints with training_state.json {"final": false} until done."""
    import json

    from engine.model_sources import BUNDLED_DIR

    state = BUNDLED_DIR / "training_state.json"
    if not (BUNDLED_DIR / "model.safetensors").is_file():
        return False
    return not state.is_file() or bool(json.loads(state.read_text()).get("final", True))


def tl_reference(model, prompt, answer, cf, pos):
    """Every number the panel shows, straight from TransformerLens (own run, no shared cache)."""
    from transformer_lens.tools.analysis import direct_logit_attribution, logit_lens

    tokens = model.to_tokens(prompt)
    a = model.to_single_token(answer)
    c = model.to_single_token(cf) if cf else None
    kw = dict(answer_tokens=a, incorrect_tokens=c, pos=pos)
    with torch.no_grad():
        logits = model(tokens)
        comp = direct_logit_attribution(model, tokens, unit="component", **kw)
        head = direct_logit_attribution(model, tokens, unit="head", **kw)
        layer = direct_logit_attribution(model, tokens, unit="layer", **kw)
        lens = logit_lens(model, tokens, incl_mid=True, positions=pos,
                          targets=[a] if c is None else [a, c])
        top = logit_lens(model, tokens, incl_mid=True, positions=pos, top_k=5)
    final = logits[0, pos, a] - (logits[0, pos, c] if c is not None else 0)
    return dict(tokens=tokens, a=a, c=c, logits=logits, comp=comp, head=head, layer=layer,
                lens=lens, top=top, final=float(final))


@pytest.mark.parametrize(("answer", "cf", "pos"), [(" Mary", " John", -1), (" Mary", "", -1),
                                                    (" John", " Mary", 6)])
def test_numbers_equal_transformer_lens(tiny_host, answer, cf, pos):
    model = tiny_host.model
    r = run_attribution(tiny_host, AttributionRequest.single(IOI, answer, cf, pos), Context())
    ref = tl_reference(model, IOI, answer, cf, pos)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    assert r.n_prompts == 1 and r.is_difference == bool(cf)
    assert r.positions[0] == pos % ref["tokens"].shape[1]
    # decomposed residual stream (components)
    assert r.component_labels == tuple(ref["comp"].labels)
    assert r.component_labels[:2] == ("embed", "pos_embed") and len(r.component_labels) == \
        2 + 2 * n_layers
    np.testing.assert_allclose(r.component_values[0], ref["comp"].attribution[:, 0].numpy(),
                               rtol=1e-5, atol=1e-5)
    # per head, in TransformerLens's label order
    head_tl = ref["head"].attribution[:, 0].numpy()
    for i, label in enumerate(ref["head"].labels[:-1]):
        layer, head = (int(x) for x in label[1:].split("H"))
        assert r.head_values[0, layer, head] == pytest.approx(head_tl[i], abs=1e-5)
    assert r.head_remainder[0] == pytest.approx(head_tl[-1], abs=1e-5)
    assert r.head_values.shape == (1, n_layers, n_heads)
    # logit lens: values, ranks, top tokens; and the DLA of the accumulated stream
    assert r.lens_labels == tuple(ref["lens"].labels)
    assert r.lens_labels[0] == "0_pre" and r.lens_labels[-1] == "final_post"
    lv = ref["lens"].values[:, 0, :].numpy()
    expected = lv[:, 0] - (lv[:, 1] if cf else 0)
    np.testing.assert_allclose(r.lens_values[0], expected, rtol=1e-5, atol=1e-5)
    ranks = ref["lens"].readout.target_ranks[:, 0, :].numpy()
    np.testing.assert_array_equal(r.lens_ranks[0], ranks[:, 0])
    if cf:
        np.testing.assert_array_equal(r.lens_cf_ranks[0], ranks[:, 1])
    else:
        assert (r.lens_cf_ranks == -1).all()
    np.testing.assert_array_equal(r.lens_top_ids[0], ref["top"].readout.top_ids[:, 0].numpy())
    np.testing.assert_allclose(r.lens_top_logits[0], ref["top"].values[:, 0].numpy(), atol=1e-5)
    assert r.lens_top_tokens[0][-1][0] == tiny_host.tokenizer.decode([int(r.lens_top_ids[0, -1, 0])])
    np.testing.assert_allclose(r.lens_direct[0], ref["layer"].attribution[:, 0].numpy(),
                               rtol=1e-5, atol=1e-5)
    # the model's own value at the position
    assert r.final_values[0] == pytest.approx(ref["final"], abs=1e-4)


@pytest.mark.parametrize("cf", [" John", ""])
def test_components_sum_to_the_final_logit_difference(tiny_host, cf):
    """With the final-layer LN scale, components + b_U term = the model's logit (difference)."""
    model = tiny_host.model
    r = run_attribution(tiny_host, AttributionRequest.single(IOI, " Mary", cf), Context())
    tokens = model.to_tokens(IOI)
    with torch.no_grad():
        logits = model(tokens)[0, -1]
    a, c = model.to_single_token(" Mary"), model.to_single_token(" John")
    final = float(logits[a] - (logits[c] if cf else 0))
    bias = float(model.b_U[a] - (model.b_U[c] if cf else 0))
    assert r.bias_values[0] == pytest.approx(bias, abs=1e-6)
    total = float(r.component_values[0].sum()) + bias
    assert total == pytest.approx(final, abs=1e-4 * max(1.0, abs(final)))
    # the same total from the head view (heads + remainder) and the accumulated stream's last entry
    heads_total = float(r.head_values[0].sum() + r.head_remainder[0]) + bias
    assert heads_total == pytest.approx(final, abs=1e-4 * max(1.0, abs(final)))
    assert float(r.lens_direct[0, -1]) + bias == pytest.approx(final, abs=1e-4)
    # the logit lens's last entry is the model's own prediction (final LN, W_U and b_U)
    assert float(r.lens_values[0, -1]) == pytest.approx(final, abs=1e-4)
    # and the components are not trivially zero (the check above could not pass by accident)
    assert np.abs(r.component_values[0]).max() > 1e-3


def test_heads_of_a_layer_plus_b_o_give_its_attention_output(tiny_host):
    """Layout check: the heads in row l of the heat map are layer l's heads."""
    from transformer_lens.tools.analysis import direct_logit_attribution  # noqa: F401

    model = tiny_host.model
    r = run_attribution(tiny_host, AttributionRequest.single(IOI, " Mary", " John"), Context())
    tokens = model.to_tokens(IOI)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        a, c = model.to_single_token(" Mary"), model.to_single_token(" John")
        for layer in range(model.cfg.n_layers):
            b_o = model.blocks[layer].attn.b_O.expand(1, tokens.shape[1], -1)[:, -1]
            stack = b_o[None]  # [1, batch, d_model]
            bias_attr = float(cache.logit_attrs(stack, a, c, pos_slice=-1)[0, 0])
            comp = r.component_values[0, r.component_labels.index(f"{layer}_attn_out")]
            assert float(r.head_values[0, layer].sum()) + bias_attr == pytest.approx(
                float(comp), abs=1e-4)


def test_batch_rows_equal_single_runs_and_prompts_may_differ_in_length(tiny_host):
    items = (AttributionItem(IOI, Target(" Mary", " John")),
             AttributionItem(IOI2, Target(" Bob", " Alice")),
             AttributionItem("The cat sat on the mat. The cat", Target(" sat", " mat", -1)))
    assert len({tiny_host.model.to_tokens(it.prompt).shape[1] for it in items}) > 1
    ctx = Context()
    batch = run_attribution(tiny_host, AttributionRequest(items), ctx)
    assert batch.n_prompts == 3 and ctx.last_progress[0] == 1.0
    for i, it in enumerate(items):
        one = run_attribution(tiny_host, AttributionRequest((it,)), Context())
        np.testing.assert_allclose(batch.component_values[i], one.component_values[0], atol=1e-6)
        np.testing.assert_allclose(batch.head_values[i], one.head_values[0], atol=1e-6)
        np.testing.assert_allclose(batch.lens_values[i], one.lens_values[0], atol=1e-6)
        assert batch.answers[i] == it.target.answer
        assert batch.counterfactuals[i] == it.target.counterfactual
        assert batch.positions[i] == len(one.str_tokens[0]) - 1
    # rows really differ (a mean over them is a real average)
    assert not np.allclose(batch.component_values[0], batch.component_values[1])


@pytest.mark.parametrize(("answer", "cf", "pos", "match"), [
    (" Mary Poppins", "", -1, "tokens for this model"),
    (" Mary", " Mary", -1, "same token"),
    ("", "", -1, "empty"),
    (" Mary", "", 99, "out of range"),
    (" Mary", "", -99, "out of range"),
])
def test_bad_targets_are_input_errors_with_hints(tiny_host, answer, cf, pos, match):
    with pytest.raises(InputError, match=match) as info:
        run_attribution(tiny_host, AttributionRequest.single(IOI, answer, cf, pos), Context())
    assert info.value.hint


def test_batch_errors_name_the_prompt_and_mixed_targets_are_refused(tiny_host):
    items = (AttributionItem(IOI, Target(" Mary", " John")),
             AttributionItem(IOI2, Target(" Bob", " Bob")))
    with pytest.raises(InputError, match="Prompt 2: .*same token"):
        run_attribution(tiny_host, AttributionRequest(items), Context())
    mixed = (AttributionItem(IOI, Target(" Mary", " John")), AttributionItem(IOI2, Target(" Bob")))
    with pytest.raises(InputError, match="counterfactual"):
        run_attribution(tiny_host, AttributionRequest(mixed), Context())
    with pytest.raises(InputError, match="no prompts"):
        run_attribution(tiny_host, AttributionRequest(()), Context())


def test_cancel_between_prompts(tiny_host):
    ctx = Context()
    seen = []

    def on_progress(fraction, message):
        seen.append(fraction)
        if len(seen) == 2:
            ctx.cancel()

    ctx._on_progress = on_progress
    items = tuple(AttributionItem(IOI, Target(" Mary", " John")) for _ in range(4))
    with pytest.raises(Cancelled):
        run_attribution(tiny_host, AttributionRequest(items), ctx)
    assert len(seen) == 2


def test_results_are_numpy_only(tiny_host):
    r = run_attribution(tiny_host, AttributionRequest.single(IOI, " Mary", " John"), Context())
    for name in r.__dataclass_fields__:
        assert not isinstance(getattr(r, name), torch.Tensor), name


def test_bundled_model_paris_rises_in_later_layers(bundled_host):
    """On the trained organism, ' Paris' is read out only after the layers that recall it."""
    if not bundled_is_trained():
        pytest.skip("the bundled model organism is still a provisional training checkpoint")
    r = run_attribution(bundled_host, AttributionRequest.single("The Eiffel Tower is in",
                                                                " Paris"), Context())
    lens, ranks = r.lens_values[0], r.lens_ranks[0]
    assert ranks[-1] == 0, "the model should predict ' Paris'"
    assert ranks[0] > 0, "the embeddings alone should not predict ' Paris'"
    half = len(lens) // 2
    assert lens[-1] > lens[0] + 1.0
    assert lens[half:].mean() > lens[:half].mean()
    # the direct contributions of the later layers are positive in total
    comps = dict(zip(r.component_labels, r.component_values[0], strict=True))
    late = [v for k, v in comps.items() if k[0].isdigit() and int(k.split("_")[0]) >= r.n_layers // 2]
    assert sum(late) > 0


def test_bundled_model_agrees_with_transformer_lens(bundled_host):
    """Structure and identities on the shipped model, trained or not."""
    prompt = "When John and Mary went to the store, John gave a drink to"
    r = run_attribution(bundled_host, AttributionRequest.single(prompt, " Mary", " John"),
                        Context())
    ref = tl_reference(bundled_host.model, prompt, " Mary", " John", -1)
    np.testing.assert_allclose(r.component_values[0], ref["comp"].attribution[:, 0].numpy(),
                               rtol=1e-4, atol=1e-4)
    assert r.head_values.shape == (1, bundled_host.info.n_layers, bundled_host.info.n_heads)
    total = float(r.component_values[0].sum() + r.bias_values[0])
    assert total == pytest.approx(ref["final"], abs=1e-3)
    assert float(r.lens_values[0, -1]) == pytest.approx(ref["final"], abs=1e-3)
