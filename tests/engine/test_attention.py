"""run_attention against TransformerLens's own run_with_cache on the same model and prompt."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.attention import AttentionRequest, run_attention
from engine.errors import InputError
from engine.jobs import Context

PROMPT = "When John and Mary went to the store, John gave a drink to"


def _full_cache(host, tokens):
    with torch.no_grad():
        _, cache = host.model.run_with_cache(tokens)
    return cache


def test_patterns_and_scores_equal_run_with_cache(tiny_host):
    result = run_attention(tiny_host, AttentionRequest(prompts=(PROMPT,), scores=True), Context())
    tokens = tiny_host.model.to_tokens(PROMPT)
    cache = _full_cache(tiny_host, tokens)
    item = result.items[0]
    n = tokens.shape[-1]
    info = tiny_host.info
    assert item.patterns.shape == (info.n_layers, info.n_heads, n, n)
    assert item.patterns.dtype == np.float32 and isinstance(item.patterns, np.ndarray)
    assert item.token_ids.tolist() == tokens[0].tolist()
    assert item.str_tokens == tuple(tiny_host.model.to_str_tokens(tokens[0]))
    for layer in range(info.n_layers):
        np.testing.assert_array_equal(item.patterns[layer], cache["pattern", layer][0].numpy())
        ref = cache["attn_scores", layer][0].numpy()
        masked = ~np.isfinite(ref)
        assert masked.any()  # causal mask: the upper triangle
        assert np.isnan(item.scores[layer][masked]).all()
        np.testing.assert_array_equal(item.scores[layer][~masked], ref[~masked])
    # Rows are distributions, and nothing attends to the future.
    np.testing.assert_allclose(item.patterns.sum(-1), 1.0, atol=1e-5)
    assert np.triu(item.patterns[0, 0], 1).max() == 0.0
    assert result.layers_with_pattern == tuple(range(info.n_layers))
    assert result.layers_with_scores == tuple(range(info.n_layers))
    assert result.notes == ()


def test_only_pattern_hooks_are_cached(tiny_host, monkeypatch):
    seen = {}
    original = type(tiny_host.model).run_with_cache

    def spy(self, *args, **kwargs):
        out, cache = original(self, *args, **kwargs)
        seen["keys"] = sorted(cache.keys())
        return out, cache

    monkeypatch.setattr(type(tiny_host.model), "run_with_cache", spy)
    run_attention(tiny_host, AttentionRequest(prompts=(PROMPT,)), Context())
    n = tiny_host.info.n_layers
    assert seen["keys"] == [f"blocks.{i}.attn.hook_pattern" for i in range(n)]


def test_several_prompts_and_a_layer_subset(tiny_host):
    prompts = (PROMPT, "The cat sat on the mat.")
    result = run_attention(tiny_host, AttentionRequest(prompts=prompts, layers=(0,)), Context())
    assert [it.label for it in result.items] == list(prompts)
    assert result.layers == (0,)
    for text, item in zip(prompts, result.items, strict=True):
        tokens = tiny_host.model.to_tokens(text)
        cache = _full_cache(tiny_host, tokens)
        assert item.patterns.shape[0] == 1
        np.testing.assert_array_equal(item.patterns[0], cache["pattern", 0][0].numpy())
        assert item.scores is None
    assert result.items[0].n_tokens != result.items[1].n_tokens


def test_explicit_token_ids_are_used_as_given(tiny_host):
    rng = np.random.default_rng(0)
    r = rng.integers(1, tiny_host.info.d_vocab, size=6).tolist()
    ids = [0] + r + r  # BOS + a random sequence repeated, as the induction scanner sends
    result = run_attention(tiny_host, AttentionRequest(token_ids=(tuple(ids),),
                                                       labels=("repeated",)), Context())
    item = result.items[0]
    assert item.label == "repeated" and item.token_ids.tolist() == ids
    cache = _full_cache(tiny_host, torch.tensor([ids]))
    np.testing.assert_array_equal(item.patterns[1], cache["pattern", 1][0].numpy())


def test_bad_inputs_are_input_errors(tiny_host):
    with pytest.raises(InputError, match="empty"):
        run_attention(tiny_host, AttentionRequest(prompts=("  ",)), Context())
    with pytest.raises(InputError, match="no prompt"):
        run_attention(tiny_host, AttentionRequest(), Context())
    with pytest.raises(InputError, match="outside the vocabulary"):
        run_attention(tiny_host, AttentionRequest(token_ids=((0, 10**7),)), Context())
    with pytest.raises(InputError, match="Layers"):
        run_attention(tiny_host, AttentionRequest(prompts=(PROMPT,), layers=(5,)), Context())
    with pytest.raises(InputError, match="context"):
        run_attention(tiny_host, AttentionRequest(prompts=("the cat " * 100,)), Context())


class _HooklessModel:
    """Stands in for an architecture whose attention TransformerLens does not hook."""

    def __init__(self, model, drop):
        self._model = model
        self.hook_dict = {k: v for k, v in model.hook_dict.items() if not drop(k)}

    def __getattr__(self, name):
        return getattr(self._model, name)


class _Host:
    def __init__(self, host, model, **info_changes):
        import dataclasses

        self.model = model
        self.info = dataclasses.replace(host.info, **info_changes)
        self.tokenizer = host.tokenizer
        self.device = host.device


def test_missing_hooks_on_some_layers_give_what_is_available(tiny_host):
    model = _HooklessModel(tiny_host.model, lambda k: k.startswith("blocks.1.attn.hook_"))
    host = _Host(tiny_host, model)
    result = run_attention(host, AttentionRequest(prompts=(PROMPT,), scores=True), Context())
    item = result.items[0]
    assert result.layers_with_pattern == (0,) and result.layers_with_scores == (0,)
    assert np.isnan(item.patterns[1]).all() and np.isfinite(item.patterns[0]).all()
    assert any("layer(s) 1" in note for note in result.notes)


def test_no_pattern_hooks_at_all_is_an_input_error(tiny_host):
    model = _HooklessModel(tiny_host.model, lambda k: k.endswith("hook_pattern"))
    with pytest.raises(InputError, match="no attention-pattern hooks"):
        run_attention(_Host(tiny_host, model), AttentionRequest(prompts=(PROMPT,)), Context())


def make_gqa_llama_folder(folder, tokenizer_source, n_heads: int = 4, n_kv: int = 2):
    """A random tiny Llama with grouped-query attention, sharing a test GPT-2's tokenizer."""
    import shutil
    from pathlib import Path

    from transformers import LlamaConfig, LlamaForCausalLM

    folder, src = Path(folder), Path(tokenizer_source)
    folder.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
            shutil.copy(f, folder / f.name)
    torch.manual_seed(0)
    vocab = len(__import__("json").loads((src / "tokenizer.json").read_text())["model"]["vocab"])
    config = LlamaConfig(hidden_size=64, num_attention_heads=n_heads, num_key_value_heads=n_kv,
                         intermediate_size=128, num_hidden_layers=2, vocab_size=vocab,
                         max_position_embeddings=64, bos_token_id=0, eos_token_id=0)
    LlamaForCausalLM(config).save_pretrained(str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def gqa_host(tmp_path_factory, tiny_gpt2_dir):
    from engine.host import load_host
    from engine.model_sources import ModelSpec

    folder = make_gqa_llama_folder(tmp_path_factory.mktemp("gqa"), tiny_gpt2_dir)
    return load_host(ModelSpec("folder", str(folder), "cpu"))


def test_grouped_query_attention_model(gqa_host):
    """A real GQA Llama: per-query-head patterns equal TransformerLens's, and the note says so."""
    assert gqa_host.info.is_gqa
    result = run_attention(gqa_host, AttentionRequest(prompts=(PROMPT,), scores=True), Context())
    item = result.items[0]
    assert item.patterns.shape[:2] == (gqa_host.info.n_layers, gqa_host.info.n_heads)
    cache = _full_cache(gqa_host, gqa_host.model.to_tokens(PROMPT))
    for layer in range(gqa_host.info.n_layers):
        np.testing.assert_array_equal(item.patterns[layer], cache["pattern", layer][0].numpy())
    assert any("Grouped-query" in note and "2 key/value heads" in note for note in result.notes)


def test_cancel_between_items(tiny_host):
    from engine.jobs import Cancelled

    ctx = Context()
    ctx.cancel()
    with pytest.raises(Cancelled):
        run_attention(tiny_host, AttentionRequest(prompts=(PROMPT,)), ctx)
