"""The early prediction (numpy, before torch) against TransformerLens's on the same checkpoint.

The worker shows it while the bridge boots, so it must give what ``run_prompt`` gives through the
bridge: the same tokens and string tokens, the same top-k ids and token strings, probabilities
within 1e-5 (losses within 1e-4; the panel shows three decimals). Anything it does not reproduce
exactly must decline (None), never raise: the real load reports real problems.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.early_prediction import Gpt2, Unsupported, early_prediction, predict
from engine.jobs import Context
from engine.model_sources import BUNDLED_DIR, ModelSpec
from engine.prompt import PromptRequest, run_prompt
from tests.conftest import ROOT

PROMPTS = [
    "When John and Mary went to the store, John gave a drink to",
    "The Eiffel Tower is in",
    " hello  world\n\n x",
    "<|endoftext|>abc<|endoftext|>",
    "é漢字 🙂 café",
    "a",
]


def assert_same(early, bridge) -> None:
    assert early.prompt == bridge.prompt
    assert early.str_tokens == bridge.str_tokens
    np.testing.assert_array_equal(early.token_ids, bridge.token_ids)
    np.testing.assert_array_equal(early.top_ids, bridge.top_ids)
    assert early.top_tokens == bridge.top_tokens
    np.testing.assert_allclose(early.top_probs, bridge.top_probs, rtol=0, atol=1e-5)
    np.testing.assert_allclose(early.loss_per_token, bridge.loss_per_token, rtol=0, atol=1e-4)
    assert early.truncated_from == bridge.truncated_from == 0
    assert early.top_probs.dtype == bridge.top_probs.dtype == np.float32
    assert early.top_ids.dtype == bridge.top_ids.dtype == np.int64


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("bos", [None, True, False])
def test_bundled_model_gives_transformer_lens_numbers(bundled_host, prompt, bos):
    request = PromptRequest(prompt, top_k=10, prepend_bos=bos)
    early = predict(BUNDLED_DIR, request)
    assert_same(early, run_prompt(bundled_host, request, Context()))


def test_bundled_model_through_the_spec_and_other_top_k(bundled_host):
    for k in (1, 5, 50):
        request = PromptRequest(PROMPTS[0], top_k=k)
        early = early_prediction(ModelSpec("bundled", device="cpu"), request)
        assert early is not None and early.top_ids.shape[1] == k
        assert_same(early, run_prompt(bundled_host, request, Context()))
    # The bundled model knows the IOI answer: the numbers mean something.
    early = early_prediction(ModelSpec(), PromptRequest(PROMPTS[0], top_k=3))
    assert early.top_tokens[-1][0] == " Mary" and early.top_probs[-1, 0] > 0.5


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
       .filter(lambda t: t.strip()))
def test_tokens_match_the_bridge_on_any_text(bundled_host, text):
    model = _bundled()
    for bos in (True, False):
        ids = model.tokens(text, bos)
        assert ids == bundled_host.model.to_tokens(text, prepend_bos=bos,
                                                   truncate=False)[0].tolist()
    assert [model.decode(i) for i in ids] == [bundled_host.tokenizer.decode([i]) for i in ids]


_CACHE: dict = {}


def _bundled() -> Gpt2:
    if "bundled" not in _CACHE:
        _CACHE["bundled"] = Gpt2(BUNDLED_DIR)
    return _CACHE["bundled"]


def test_every_token_decodes_as_the_bridge_decodes(bundled_host):
    model = _bundled()
    n = bundled_host.model.cfg.d_vocab
    assert [model.decode(i) for i in range(n)] == [bundled_host.tokenizer.decode([i])
                                                   for i in range(n)]


@pytest.mark.parametrize("prompt", PROMPTS[:3])
def test_random_gpt2_folder_gives_transformer_lens_numbers(tiny_host, tiny_gpt2_dir, prompt):
    request = PromptRequest(prompt, top_k=7)
    assert_same(predict(tiny_gpt2_dir, request), run_prompt(tiny_host, request, Context()))


def test_untied_output_embedding_and_unprefixed_names(tmp_path):
    """A GPT-2 whose lm_head is its own matrix, saved without the ``transformer.`` prefix."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    from engine.host import load_host
    from tests.model_fixtures import make_tokenizer

    make_tokenizer(tmp_path)
    vocab = len(json.loads((tmp_path / "tokenizer.json").read_text())["model"]["vocab"])
    torch.manual_seed(3)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=32,
                                       vocab_size=vocab, tie_word_embeddings=False,
                                       bos_token_id=0, eos_token_id=0))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    model.save_pretrained(str(tmp_path), safe_serialization=True)
    weights = load_file(str(tmp_path / "model.safetensors"))
    assert "lm_head.weight" in weights
    assert not torch.equal(weights["lm_head.weight"], weights["transformer.wte.weight"])
    save_file({k.removeprefix("transformer."): v.contiguous() for k, v in weights.items()},
              str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    host = load_host(ModelSpec("folder", str(tmp_path), "cpu"))
    request = PromptRequest(PROMPTS[0], top_k=5)
    assert_same(predict(tmp_path, request), run_prompt(host, request, Context()))


def _copy_with_config(src, dst, **changes):
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(changes)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.mark.parametrize("change, reason", [
    ({"activation_function": "relu"}, "activation_function"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"model_type": "gpt_neo", "architectures": ["GPTNeoForCausalLM"]}, "GPT2LMHeadModel"),
])
def test_what_it_does_not_compute_exactly_is_declined(tiny_gpt2_dir, tmp_path, change, reason):
    folder = _copy_with_config(tiny_gpt2_dir, tmp_path / "m", **change)
    with pytest.raises(Unsupported, match=reason):
        predict(folder, PromptRequest("hello world"))
    assert early_prediction(ModelSpec("folder", str(folder)), PromptRequest("hello")) is None


def test_tokenizer_that_adds_tokens_is_declined(tiny_gpt2_dir, tmp_path):
    folder = shutil.copytree(tiny_gpt2_dir, tmp_path / "m")
    tok = json.loads((folder / "tokenizer.json").read_text())
    tok["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0],
                                             "tokens": ["<|endoftext|>"]}}}
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(Unsupported, match="post-processor"):
        predict(folder, PromptRequest("hello world"))


def test_requests_only_the_bridge_answers_are_declined(tiny_gpt2_dir):
    spec = ModelSpec("folder", str(tiny_gpt2_dir), "cpu")
    assert early_prediction(spec, PromptRequest("hello world")) is not None
    long = "the cat sat on the mat. " * 40  # over the 64-token context: the bridge's message
    assert early_prediction(spec, PromptRequest(long)) is None
    assert early_prediction(spec, PromptRequest(long, truncate=True)) is None
    assert early_prediction(spec, PromptRequest("   ")) is None
    assert early_prediction(ModelSpec("folder", str(tiny_gpt2_dir), "cpu", "bfloat16"),
                            PromptRequest("hello world")) is None
    assert early_prediction(ModelSpec("hf", "gpt2", "cpu"), PromptRequest("hello")) is None


def test_broken_folders_decline_without_raising(tiny_gpt2_dir, tmp_path):
    missing = ModelSpec("folder", str(tmp_path / "nothing-here"))
    assert early_prediction(missing, PromptRequest("hello")) is None
    truncated = shutil.copytree(tiny_gpt2_dir, tmp_path / "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert early_prediction(ModelSpec("folder", str(truncated)), PromptRequest("hello")) is None
    no_tok = shutil.copytree(tiny_gpt2_dir, tmp_path / "no-tokenizer-json")
    (no_tok / "tokenizer.json").unlink()
    (no_tok / "vocab.json").write_text("{}")
    with pytest.raises(Unsupported, match="tokenizer.json"):
        predict(no_tok, PromptRequest("hello"))


def test_it_imports_neither_torch_nor_transformers():
    """The point: it runs while the worker has yet to import them (seconds)."""
    code = ("import sys\n"
            "from engine.early_prediction import early_prediction\n"
            "from engine.model_sources import ModelSpec\n"
            "from engine.prompt_result import PromptRequest\n"
            "r = early_prediction(ModelSpec(), PromptRequest('The Eiffel Tower is in'))\n"
            "print(r is not None, [m for m in ('torch', 'transformers', 'transformer_lens')"
            " if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "True []", out.stdout + out.stderr
