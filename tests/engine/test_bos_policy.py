"""One BOS policy for every panel: the model's own default unless the user chooses, so a prompt
gets the same tokens everywhere (GPT-2 prepends BOS by default; Pythia and BLOOM do not)."""

from __future__ import annotations

import pytest

from engine.attention import AttentionRequest, run_attention
from engine.attribution import AttributionRequest, run_attribution
from engine.induction import InductionRequest, run_induction_scan
from engine.jobs import Context
from engine.patch_pairs import PairCheckRequest, PromptPair, check_pairs
from engine.prompt import PromptRequest, run_prompt

PROMPT = "When John and Mary went, John gave it to"


def tokens_in_every_panel(host, bos):
    return {
        "predictions": run_prompt(host, PromptRequest(PROMPT, prepend_bos=bos),
                                  Context()).str_tokens,
        "attention": run_attention(host, AttentionRequest(prompts=(PROMPT,), prepend_bos=bos),
                                   Context()).items[0].str_tokens,
        "attribution": run_attribution(host, AttributionRequest.single(
            PROMPT, " Mary", prepend_bos=bos), Context()).str_tokens[0],
        "patching": check_pairs(host, PairCheckRequest(
            (PromptPair(PROMPT, PROMPT, " Mary"),), prepend_bos=bos), Context()).clean_tokens[0],
        "induction": run_induction_scan(host, InductionRequest(
            seq_len=4, batch=1, prompt=PROMPT, prepend_bos=bos), Context()).prompt_str_tokens,
    }


@pytest.mark.parametrize("family,default", [("gpt2", True), ("gpt_neox", False),
                                            ("bloom", False), ("llama", True)])
def test_every_panel_tokenises_a_prompt_identically(family_host, family, default):
    host = family_host(family)
    assert host.info.default_prepend_bos is default
    bos_token = host.tokenizer.decode([host.tokenizer.bos_token_id])
    for choice in (None, True, False):
        seen = tokens_in_every_panel(host, choice)
        first = seen["predictions"]
        assert all(tuple(t) == tuple(first) for t in seen.values()), seen
        with_bos = default if choice is None else choice
        assert (first[0] == bos_token) is with_bos
        assert len(first) == len(PROMPT.split()) + 2 + with_bos  # "it" is two tokens here


def test_repeated_tokens_follow_the_policy(family_host):
    host = family_host("gpt_neox")
    off = run_induction_scan(host, InductionRequest(seq_len=5, batch=2), Context())
    on = run_induction_scan(host, InductionRequest(seq_len=5, batch=2, prepend_bos=True),
                            Context())
    assert not off.has_bos and off.rep_tokens.shape[1] == 10
    assert on.has_bos and on.rep_tokens.shape[1] == 11
