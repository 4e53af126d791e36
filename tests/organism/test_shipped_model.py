"""The bundled organism loads offline through the engine and gets the classic examples right."""

from __future__ import annotations

import json

import pytest
import torch

from tools.organism.corpus import CLASSIC_EXAMPLES, IOI_TEMPLATES, single_token_words
from tools.organism.evaluate import DEFAULT_FOLDER, load_bridge

FOLDER = DEFAULT_FOLDER
pytestmark = pytest.mark.skipif(
    not (FOLDER / "model.safetensors").exists(), reason="organism not trained"
)


def test_folder_is_small_gpt2_with_card():
    cfg = json.loads((FOLDER / "config.json").read_text())
    assert cfg["model_type"] == "gpt2" and cfg["architectures"] == ["GPT2LMHeadModel"]
    assert cfg["n_positions"] >= 128
    total = sum(p.stat().st_size for p in FOLDER.iterdir() if p.is_file())
    assert total <= 20 * 2**20
    assert (FOLDER / "tokenizer.json").exists()
    assert (FOLDER / "README.md").exists()


def test_tokenizer_single_token_properties():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(FOLDER))
    assert tok.bos_token == tok.eos_token == tok.unk_token == "<|endoftext|>"
    assert tok.bos_token_id == 0
    for w in single_token_words() + [a.strip() for _, a in CLASSIC_EXAMPLES]:
        assert len(tok.encode(" " + w)) == 1, w
    assert tok.tokenize(" Paris") == ["\u0120Paris"]  # leading space is part of the token
    assert (
        tok.decode(tok.encode("When John and Mary went to the store"))
        == "When John and Mary went to the store"
    )
    assert len(IOI_TEMPLATES) >= 10


@pytest.fixture(scope="module")
def bridge():
    torch.manual_seed(0)
    return load_bridge(FOLDER)


@pytest.mark.parametrize(("prompt", "answer"), CLASSIC_EXAMPLES)
def test_classic_example_top1(bridge, prompt, answer):
    with torch.no_grad():
        logits = bridge(bridge.to_tokens(prompt))[0, -1]
    assert bridge.to_tokens(prompt)[0, 0].item() == 0  # BOS = <|endoftext|>
    assert bridge.to_string(logits.argmax().view(1)) == answer


def test_old_hook_names_work(bridge):
    _, cache = bridge.run_with_cache(bridge.to_tokens("The cat sat on the mat. The cat"))
    pat = cache["blocks.0.attn.hook_pattern"]
    assert pat.shape[1] == bridge.cfg.n_heads
    assert torch.allclose(pat.sum(-1), torch.ones_like(pat.sum(-1)), atol=1e-4)
