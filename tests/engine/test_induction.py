"""The induction scanner against TransformerLens: head_detector scores, cache patterns, losses,
hook-based ablation, bad input, and (on the trained organism) real induction heads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformer_lens.head_detector import detect_head

from engine.errors import InputError
from engine.head_scores import PRESET_FORMULAS, compile_formula, detection_pattern
from engine.induction import (
    AblationRequest,
    CustomPattern,
    InductionRequest,
    half_slices,
    run_induction_ablation,
    run_induction_scan,
)
from engine.jobs import Context

PROMPT = "The cat sat on the mat. The cat sat on the mat, and the dog sat on the cat."
NAMED = (("previous", "previous_token_head"), ("duplicate", "duplicate_token_head"),
         ("induction", "induction_head"))
OPTIONS = [
    {},
    {"exclude_bos": True, "exclude_current_token": True},
    {"error_measure": "abs"},
    {"error_measure": "abs", "exclude_bos": True, "exclude_current_token": True},
]


def scan(host, **kw):
    return run_induction_scan(host, InductionRequest(**kw), Context())


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items())
                         or "default")
def test_prompt_scores_equal_detect_head(tiny_host, opts):
    res = scan(tiny_host, seq_len=8, batch=3, prompt=PROMPT, **opts)
    model = tiny_host.model
    assert res.prompt_token_ids.tolist() == model.to_tokens(PROMPT)[0].tolist()
    for kind, name in NAMED:
        ref = detect_head(model, PROMPT, name, **opts)
        assert res.prompt_scores[kind].shape == tuple(ref.shape)
        np.testing.assert_allclose(res.prompt_scores[kind], ref.numpy(), atol=1e-5, rtol=0)
    # current / first token are detect_head with the diagonal / BOS-column pattern tensors.
    n = len(res.prompt_token_ids)
    for kind, pat in (("current", torch.eye(n)), ("first", torch.zeros(n, n).index_fill_(1, torch.tensor([0]), 1.0))):
        ref = detect_head(model, PROMPT, pat, **opts)
        np.testing.assert_allclose(res.prompt_scores[kind], ref.numpy(), atol=1e-5, rtol=0)


def test_repeated_scores_equal_detect_head_on_the_same_tokens(tiny_host):
    """Word tokens re-tokenise as themselves, so detect_head can take the sequences as text."""
    res = scan(tiny_host, seq_len=6, batch=4, seed=3, token_pool="words")
    model = tiny_host.model
    texts = [tiny_host.tokenizer.decode(row[1:].tolist()) for row in res.rep_tokens]
    for text, row in zip(texts, res.rep_tokens, strict=True):
        assert model.to_tokens(text)[0].tolist() == row.tolist()
    for kind, name in NAMED:
        key = "induction_detector" if kind == "induction" else kind
        ref = detect_head(model, texts, name)  # a list: the mean over the sequences
        np.testing.assert_allclose(res.repeated[key], ref.numpy(), atol=1e-5, rtol=0)


def test_induction_stripe_equals_direct_computation_from_cache(tiny_host):
    T, B = 7, 5
    res = scan(tiny_host, seq_len=T, batch=B, seed=11)
    tokens = torch.from_numpy(res.rep_tokens)
    assert tokens.shape == (B, 2 * T + 1)
    assert torch.equal(tokens[:, 1:T + 1], tokens[:, T + 1:])  # r + r
    assert (tokens[:, 0] == tiny_host.tokenizer.bos_token_id).all()
    _, cache = tiny_host.model.run_with_cache(tokens)
    for layer in range(res.n_layers):
        pattern = cache["pattern", layer]  # [batch, head, q, k]
        # ARENA: the (1 - T)-offset diagonal; its first two cells (queries T-1 and T) are in the
        # first copy, where nothing has an earlier copy, so the score averages the rest.
        stripe = pattern.diagonal(offset=1 - T, dim1=-2, dim2=-1)
        arena = stripe[..., 2:].mean((0, -1))
        loop = torch.zeros(res.n_heads)
        for q in range(T + 1, 2 * T + 1):
            loop += pattern[:, :, q, q - T + 1].mean(0) / T
        np.testing.assert_allclose(res.repeated["induction"][layer], arena.numpy(), atol=1e-6)
        np.testing.assert_allclose(res.repeated["induction"][layer], loop.numpy(), atol=1e-6)


def test_loss_per_position_and_halves(tiny_host):
    T = 6
    res = scan(tiny_host, seq_len=T, batch=4, seed=2)
    tokens = torch.from_numpy(res.rep_tokens)
    with torch.no_grad():
        lp = torch.log_softmax(tiny_host.model(tokens).float(), -1)
    loss = -lp[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    np.testing.assert_allclose(res.loss_per_position, loss.mean(0).numpy(), atol=1e-5)
    first, second = half_slices(T, True)
    assert (first.start, first.stop, second.start, second.stop) == (0, T, T, 2 * T)
    assert res.first_half_loss == pytest.approx(float(loss[:, :T].mean()), abs=1e-5)
    assert res.second_half_loss == pytest.approx(float(loss[:, T:].mean()), abs=1e-5)


def test_one_forward_pass_caching_only_patterns(tiny_host, monkeypatch):
    model = tiny_host.model
    calls = []
    original = model.run_with_cache

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append((tuple(args[0].shape), sorted(out[1].keys())))
        return out

    monkeypatch.setattr(model, "run_with_cache", spy)
    res = scan(tiny_host, seq_len=10, batch=6, prompt=PROMPT,
               custom=CustomPattern("q - k == 2", target="repeated"))
    assert len(calls) == 1 and res.n_forward_passes == 1
    shape, keys = calls[0]
    assert shape[0] == 6 + 1  # the repeated batch and the prompt together
    assert keys == [f"blocks.{i}.attn.hook_pattern" for i in range(res.n_layers)]


def test_chunked_passes_give_the_same_scores(tiny_host):
    custom = CustomPattern("tok(k) == tok(q - 1)", target="repeated")
    one = scan(tiny_host, seq_len=8, batch=5, prompt=PROMPT, custom=custom)
    many = scan(tiny_host, seq_len=8, batch=5, prompt=PROMPT, max_rows_per_pass=2, custom=custom)
    np.testing.assert_allclose(many.custom_scores, one.custom_scores, atol=1e-6)
    np.testing.assert_array_equal(many.custom_pattern, one.custom_pattern)
    assert one.custom_pattern.shape == (17, 17) and one.custom_pattern.sum() > 0
    assert many.n_forward_passes == 3 and "3 passes" in " ".join(many.notes)
    for key in one.repeated:
        np.testing.assert_allclose(many.repeated[key], one.repeated[key], atol=1e-6)
    for key in one.prompt_scores:
        np.testing.assert_allclose(many.prompt_scores[key], one.prompt_scores[key], atol=1e-6)
    np.testing.assert_allclose(many.loss_per_position, one.loss_per_position, atol=1e-5)


def test_seed_and_pool_determine_the_tokens(tiny_host):
    a = scan(tiny_host, seq_len=5, batch=2, seed=1)
    b = scan(tiny_host, seq_len=5, batch=2, seed=1)
    c = scan(tiny_host, seq_len=5, batch=2, seed=2)
    assert np.array_equal(a.rep_tokens, b.rep_tokens)
    assert not np.array_equal(a.rep_tokens, c.rep_tokens)
    specials = set(tiny_host.tokenizer.all_special_ids)
    assert not specials & set(a.rep_tokens[:, 1:].reshape(-1).tolist())
    words = scan(tiny_host, seq_len=5, batch=2, token_pool="words")
    assert all(t.startswith(" ") and t[1:].isalpha() for t in words.rep_str_tokens[1:])


# -- custom patterns -----------------------------------------------------------------------------
def test_formula_presets_reproduce_head_detector_patterns(tiny_host):
    from transformer_lens import head_detector as hd

    tokens = tiny_host.model.to_tokens(PROMPT).cpu()
    ids = tokens[0].numpy()
    pairs = {"same token as mine (duplicate)": hd.get_duplicate_token_head_detection_pattern,
             "token after an earlier copy of mine (induction)":
                 hd.get_induction_head_detection_pattern,
             "previous token (offset 1)": hd.get_previous_token_head_detection_pattern}
    for preset, fn in pairs.items():
        ref = fn(tokens).numpy()
        assert ref.sum() > 0
        np.testing.assert_array_equal(compile_formula(PRESET_FORMULAS[preset])(ids), ref)
        kind = preset.split("(")[-1].rstrip(")").replace("offset 1", "previous")
        np.testing.assert_array_equal(detection_pattern(tokens, kind)[0].numpy(), ref)


@pytest.mark.parametrize("target", ["prompt", "repeated"])
def test_custom_formula_scores_equal_detect_head(tiny_host, target):
    formula = "q - k == 3 or (k >= 1 and tok(k) == tok(q - 1))"
    res = scan(tiny_host, seq_len=6, batch=3, prompt=PROMPT, token_pool="words",
               custom=CustomPattern(formula, target=target), exclude_bos=True)
    model = tiny_host.model
    fn = compile_formula(formula)
    if target == "prompt":
        pat = torch.from_numpy(fn(res.prompt_token_ids))
        np.testing.assert_array_equal(res.custom_pattern, pat.numpy())
        ref = detect_head(model, PROMPT, pat, exclude_bos=True)
    else:
        texts = [tiny_host.tokenizer.decode(row[1:].tolist()) for row in res.rep_tokens]
        ref = torch.stack([detect_head(model, t, torch.from_numpy(fn(row)), exclude_bos=True)
                           for t, row in zip(texts, res.rep_tokens, strict=True)]).mean(0)
    np.testing.assert_allclose(res.custom_scores, ref.numpy(), atol=1e-5)


def test_painted_pattern_scores_equal_detect_head(tiny_host):
    n = len(tiny_host.model.to_tokens(PROMPT)[0])
    rng = np.random.default_rng(0)
    painted = np.tril((rng.random((n, n)) < 0.2).astype(np.float32))
    res = scan(tiny_host, seq_len=5, batch=2, prompt=PROMPT,
               custom=CustomPattern(painted=tuple(map(tuple, painted.tolist())), target="prompt"))
    ref = detect_head(tiny_host.model, PROMPT, torch.from_numpy(painted))
    np.testing.assert_allclose(res.custom_scores, ref.numpy(), atol=1e-5)
    with pytest.raises(InputError, match="above the diagonal"):
        scan(tiny_host, seq_len=5, batch=2, prompt=PROMPT,
             custom=CustomPattern(painted=tuple(map(tuple, np.ones((n, n)).tolist()))))
    with pytest.raises(InputError, match="sequence has"):
        scan(tiny_host, seq_len=5, batch=2, prompt=PROMPT,
             custom=CustomPattern(painted=((1.0,),)))


@pytest.mark.parametrize("formula, message", [
    ("", "empty"),
    ("q -", "not valid"),
    ("__import__('os')", "Unknown name|only function"),
    ("q.real == 1", "Attribute"),
    ("x == 1", "Unknown name"),
    ("q - k == 1.5", "whole numbers"),
    ("q // 0 == 1", "divides by zero"),
    ("[q for q in k]", "not allowed"),
])
def test_bad_formulas_are_clear_input_errors(formula, message):
    with pytest.raises(InputError, match=message):
        compile_formula(formula)(np.arange(5))


def test_formula_language_semantics():
    ids = np.array([0, 5, 6, 5, 6, 7])
    pat = compile_formula("tok(k) == tok(q) and k != q")(ids)
    assert pat[3, 1] == 1 and pat[4, 2] == 1 and pat.sum() == 2
    assert compile_formula("not (k == q) and q - k < 2")(ids).sum() == 5
    assert compile_formula("k == n - 1")(ids).sum() == 1  # only the last row reaches it
    assert compile_formula("1")(ids).sum() == 21  # everything on or below the diagonal


# -- ablation ------------------------------------------------------------------------------------
def test_zero_ablation_equals_manual_hooks(tiny_host):
    heads = ((0, 1), (1, 2))
    req = AblationRequest(heads=heads, mode="zero", seq_len=6, batch=3, seed=4, control_sets=2,
                          control_seed=9)
    ab = run_induction_ablation(tiny_host, req, Context())
    tokens = torch.from_numpy(scan(tiny_host, seq_len=6, batch=3, seed=4).rep_tokens)

    def zero(head):
        def hook(z, hook):
            z[:, :, head] = 0
            return z
        return hook

    def manual(hs):
        fwd = [(f"blocks.{la}.attn.hook_z", zero(h)) for la, h in hs]
        with torch.no_grad():
            logits = tiny_host.model.run_with_hooks(tokens, fwd_hooks=fwd)
        lp = torch.log_softmax(logits.float(), -1)
        return (-lp[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]).mean(0).numpy()

    np.testing.assert_allclose(ab.loss_clean, manual([]), atol=1e-5)
    np.testing.assert_allclose(ab.loss_ablated, manual(heads), atol=1e-5)
    assert len(ab.control_heads) == 2
    for i, ctrl in enumerate(ab.control_heads):
        assert len(ctrl) == len(heads) and not set(ctrl) & set(heads)
        np.testing.assert_allclose(ab.loss_control[i], manual(ctrl), atol=1e-5)
    assert ab.ablated_halves[1] == pytest.approx(float(manual(heads)[6:].mean()), abs=1e-5)
    assert not np.allclose(ab.loss_ablated, ab.loss_clean)


def test_mean_ablation_writes_the_clean_mean(tiny_host):
    heads = ((1, 0),)
    req = AblationRequest(heads=heads, mode="mean", seq_len=5, batch=3, seed=0, control_sets=0)
    ab = run_induction_ablation(tiny_host, req, Context())
    tokens = torch.from_numpy(scan(tiny_host, seq_len=5, batch=3, seed=0).rep_tokens)
    with torch.no_grad():
        _, cache = tiny_host.model.run_with_cache(tokens)
        mean = cache["blocks.1.attn.hook_z"][:, :, 0].mean((0, 1))

        def hook(z, hook):
            z[:, :, 0] = mean
            return z

        logits = tiny_host.model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_z", hook)])
    lp = torch.log_softmax(logits.float(), -1)
    ref = (-lp[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]).mean(0).numpy()
    np.testing.assert_allclose(ab.loss_ablated, ref, atol=1e-5)
    assert ab.loss_control.shape == (0, ref.size)


def test_ablation_bad_input(tiny_host):
    with pytest.raises(InputError, match="No heads"):
        run_induction_ablation(tiny_host, AblationRequest(heads=(), seq_len=5, batch=2), Context())
    with pytest.raises(InputError, match="does not exist"):
        run_induction_ablation(tiny_host, AblationRequest(heads=((9, 0),), seq_len=5, batch=2),
                               Context())
    every = tuple((la, h) for la in range(2) for h in range(4))
    with pytest.raises(InputError, match="Every head"):
        run_induction_ablation(tiny_host, AblationRequest(heads=every, seq_len=5, batch=2),
                               Context())


# -- bad input -----------------------------------------------------------------------------------
def test_bad_lengths_and_batches_are_clear(tiny_host):
    with pytest.raises(InputError, match=r"beyond this model's context of 64 tokens") as err:
        scan(tiny_host, seq_len=40, batch=2)
    assert "at most 31" in err.value.hint
    assert scan(tiny_host, seq_len=31, batch=1).rep_tokens.shape == (1, 63)
    with pytest.raises(InputError, match="at least 2"):
        scan(tiny_host, seq_len=1, batch=2)
    with pytest.raises(InputError, match="at least one"):
        scan(tiny_host, seq_len=5, batch=0)
    with pytest.raises(InputError, match="more than this scanner runs") as err:
        scan(tiny_host, seq_len=5, batch=10**6)
    assert "smaller batch" in err.value.hint
    with pytest.raises(InputError, match="no prompt"):
        scan(tiny_host, seq_len=5, batch=2, custom=CustomPattern("k == q", target="prompt"))


def test_batch_too_big_for_memory_is_chunked(tiny_host, monkeypatch):
    import engine.induction as ind

    monkeypatch.setattr(ind, "_available_bytes", lambda device: 1)  # nothing fits: one per pass
    res = scan(tiny_host, seq_len=5, batch=3, prompt=PROMPT)
    assert res.n_forward_passes == 4 and "did not fit in memory" in res.notes[0]


def test_out_of_memory_is_an_input_error(tiny_host, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 9 GiB")

    monkeypatch.setattr(tiny_host.model, "run_with_cache", boom)
    with pytest.raises(InputError, match="Out of memory"):
        scan(tiny_host, seq_len=5, batch=2)


def test_model_too_small(tmp_path):
    from engine.host import load_host
    from engine.model_sources import ModelSpec
    from tests.model_fixtures import make_gpt2_folder

    folder = make_gpt2_folder(tmp_path / "m", n_layer=1, n_head=2, n_embd=16, n_positions=4)
    host = load_host(ModelSpec("folder", str(folder), "cpu"))
    with pytest.raises(InputError, match="too small"):
        scan(host, seq_len=2, batch=1)
    folder = make_gpt2_folder(tmp_path / "m1", n_layer=1, n_head=2, n_embd=16, n_positions=16)
    host = load_host(ModelSpec("folder", str(folder), "cpu"))
    res = scan(host, seq_len=3, batch=2)
    assert "one-layer model" in res.notes[0]


def test_cancel_between_passes(tiny_host):
    from engine.jobs import Cancelled

    ctx = Context()
    ctx.cancel()
    with pytest.raises(Cancelled):
        run_induction_scan(tiny_host, InductionRequest(seq_len=5, batch=2), ctx)


# -- the bundled model organism ------------------------------------------------------------------
def _organism_trained() -> bool:
    from engine.model_sources import BUNDLED_DIR

    state = BUNDLED_DIR / "training_state.json"
    try:
        return bool(json.loads(state.read_text()).get("final"))
    except (OSError, ValueError):
        return False


def test_bundled_scores_equal_detect_head(bundled_host):
    res = scan(bundled_host, seq_len=20, batch=2, prompt=PROMPT)
    for kind, name in NAMED:
        ref = detect_head(bundled_host.model, PROMPT, name)
        np.testing.assert_allclose(res.prompt_scores[kind], ref.numpy(), atol=1e-5)


@pytest.mark.skipif(not _organism_trained(), reason="the organism is still training (its "
                    "training_state.json is not final): induction heads may not have formed")
def test_bundled_organism_has_causal_induction_heads(bundled_host):
    res = scan(bundled_host, seq_len=40, batch=16, seed=0)
    ind = res.repeated["induction"]
    heads = tuple((int(la), int(h)) for la, h in zip(*np.nonzero(ind >= 0.5), strict=True))
    assert heads, f"no head with induction score >= 0.5; best {ind.max():.2f}"
    assert res.second_half_loss < res.first_half_loss - 1.0  # in-context copying works
    ab = run_induction_ablation(bundled_host, AblationRequest(
        heads=heads, mode="zero", seq_len=40, batch=16, seed=0, control_sets=5), Context())
    assert ab.ablated_rise > 0.5
    assert ab.ablated_rise > 3 * max(ab.control_rise, 0.05), (ab.ablated_rise, ab.control_rise)


def test_chunked_ablation_equals_one_pass(tiny_host):
    kw = dict(heads=((1, 1), (0, 3)), mode="mean", seq_len=5, batch=5, seed=2, control_sets=2)
    one = run_induction_ablation(tiny_host, AblationRequest(**kw), Context())
    many = run_induction_ablation(tiny_host, AblationRequest(**kw, max_rows_per_pass=2), Context())
    assert many.control_heads == one.control_heads
    np.testing.assert_allclose(many.loss_ablated, one.loss_ablated, atol=1e-5)
    np.testing.assert_allclose(many.loss_control, one.loss_control, atol=1e-5)
    np.testing.assert_allclose(many.control_halves, one.control_halves, atol=1e-5)


def test_best_possible_score_bounds_every_head(seed=0):
    """No attention pattern beats the ceiling (head_detector's own scoring), for every measure
    and exclusion; the ceiling is what a 'perfect' head gets."""
    from transformer_lens.head_detector import (
        compute_head_attention_similarity_score,
        get_induction_head_detection_pattern,
    )

    from engine.head_scores import best_possible_score

    gen = torch.Generator().manual_seed(seed)
    tokens = torch.tensor([[0, 5, 7, 9, 5, 7, 3, 9, 11]])
    detection = get_induction_head_detection_pattern(tokens)
    n = tokens.shape[-1]
    for measure in ("mul", "abs"):
        for bos in (False, True):
            for cur in (False, True):
                opts = dict(exclude_bos=bos, exclude_current_token=cur, error_measure=measure)
                ceiling = best_possible_score(detection, **opts)
                best_seen = -1e9
                for _ in range(100):
                    logits = torch.randn(n, n, generator=gen) * 3
                    logits = logits.masked_fill(torch.triu(torch.ones(n, n), 1).bool(), -1e9)
                    pattern = torch.softmax(logits, -1)
                    best_seen = max(best_seen, compute_head_attention_similarity_score(
                        pattern, detection.clone(), **opts))
                assert best_seen <= ceiling + 1e-6, (opts, best_seen, ceiling)
                assert ceiling <= 1.0


def test_cancel_lands_inside_a_forward_pass_and_leaves_no_hooks(tiny_host):
    """A Cancel is checked as each block starts (one pass can take seconds): the scan stops in
    the middle of its only forward pass, and the model runs as before afterwards."""
    from engine.jobs import Cancelled

    before = scan(tiny_host, seq_len=8, batch=3, prompt=PROMPT)
    hooks_before = [len(b._forward_pre_hooks) for b in tiny_host.model.blocks]

    class CancelInLayer1(Context):
        calls = 0

        def check_cancelled(self):
            self.calls += 1
            if self.calls == 3:  # before the pass, block 0, block 1: mid-forward
                raise Cancelled()

    ctx = CancelInLayer1()
    with pytest.raises(Cancelled):
        run_induction_scan(tiny_host, InductionRequest(seq_len=8, batch=3, prompt=PROMPT), ctx)
    assert ctx.calls == 3
    assert [len(b._forward_pre_hooks) for b in tiny_host.model.blocks] == hooks_before
    after = scan(tiny_host, seq_len=8, batch=3, prompt=PROMPT)
    for key in before.repeated:
        np.testing.assert_array_equal(after.repeated[key], before.repeated[key])


def _perfect_head_by_rows(d, exclude_bos, exclude_current_token):
    """The perfect head of best_possible_score, row by row as its docstring says."""
    n = d.shape[-1]
    ideal = torch.zeros(n, n)
    for q in range(n):
        excluded = ({0} if exclude_bos else set()) | ({q} if exclude_current_token else set())
        cells = [k for k in range(q + 1) if d[q, k] > 0 and k not in excluded]
        if cells:
            ideal[q, cells] = 1.0 / len(cells)
        else:
            ideal[q, min(excluded) if excluded else q] = 1.0
    return ideal


@pytest.mark.parametrize("exclude_bos", [False, True])
@pytest.mark.parametrize("exclude_current_token", [False, True])
def test_best_possible_score_is_the_row_by_row_perfect_head(exclude_bos, exclude_current_token):
    from engine.head_scores import best_possible_score, detector_scores

    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        n = int(torch.randint(2, 40, (1,), generator=g))
        d = (torch.rand(n, n, generator=g) < 0.15).float()
        opts = dict(exclude_bos=exclude_bos, exclude_current_token=exclude_current_token)
        want = detector_scores(_perfect_head_by_rows(d, **opts)[None, None], d[None], **opts)
        assert best_possible_score(d, **opts) == float(want[0, 0])
