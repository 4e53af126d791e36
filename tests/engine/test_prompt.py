"""run_prompt and the tokenisation helpers against direct computation on the same model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import InputError, PromptTooLong
from engine.jobs import Context
from engine.prompt import PromptRequest, run_prompt
from engine.tokens import single_token_id, visible

PROMPT = "When John and Mary went to the store, John gave a drink to"


def test_top_k_and_loss_match_direct_computation(tiny_host):
    result = run_prompt(tiny_host, PromptRequest(PROMPT, top_k=7), Context())
    tokens = tiny_host.model.to_tokens(PROMPT)
    with torch.no_grad():
        lp = torch.log_softmax(tiny_host.model(tokens)[0], -1)
    n = tokens.shape[1]
    assert result.token_ids.tolist() == tokens[0].tolist()
    assert result.top_probs.shape == (n, 7) and result.top_ids.shape == (n, 7)
    expected_top = lp.topk(7, -1)
    np.testing.assert_array_equal(result.top_ids, expected_top.indices.numpy())
    np.testing.assert_allclose(result.top_probs, expected_top.values.exp().numpy(), atol=1e-6)
    assert np.all(np.diff(result.top_probs, axis=1) <= 0)
    expected_loss = -lp[:-1].gather(-1, tokens[0, 1:, None])[:, 0]
    np.testing.assert_allclose(result.loss_per_token, expected_loss.numpy(), atol=1e-5)
    assert result.str_tokens[0] == "<|endoftext|>"
    assert "".join(result.str_tokens[1:]) == PROMPT
    assert result.top_tokens[3][0] == tiny_host.tokenizer.decode([int(result.top_ids[3, 0])])


def test_empty_prompt_is_an_input_error(tiny_host):
    with pytest.raises(InputError, match="empty"):
        run_prompt(tiny_host, PromptRequest("   "), Context())


def test_too_long_prompt_offers_truncation(tiny_host):
    long = "the cat sat on the mat. " * 40
    with pytest.raises(PromptTooLong) as err:
        run_prompt(tiny_host, PromptRequest(long), Context())
    assert err.value.n_ctx == 64 and err.value.n_tokens > 64
    result = run_prompt(tiny_host, PromptRequest(long, truncate=True), Context())
    assert len(result.str_tokens) == 64
    assert result.truncated_from == err.value.n_tokens
    assert result.str_tokens[0] == "<|endoftext|>"
    full = tiny_host.model.to_tokens(long, truncate=False)[0]
    assert result.token_ids[1:].tolist() == full[-63:].tolist()


def test_single_token_check(tiny_host):
    tok = tiny_host.model.to_tokens(" John", prepend_bos=False)[0]
    assert tok.numel() == 1
    assert single_token_id(tiny_host, " John") == int(tok[0])
    with pytest.raises(InputError, match="is [0-9]+ tokens for this model"):
        single_token_id(tiny_host, " Constantinople")
    with pytest.raises(InputError, match="empty"):
        single_token_id(tiny_host, "")


def test_visible_tokens():
    assert visible(" the") == "·the"
    assert visible("\n") == "↵"
    assert visible("") == "∅"


def test_cancel_stops_the_job(tiny_host):
    from engine.jobs import Cancelled

    ctx = Context()
    ctx.cancel()
    with pytest.raises(Cancelled):
        run_prompt(tiny_host, PromptRequest(PROMPT), ctx)
