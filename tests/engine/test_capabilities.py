"""The per-model probe finds what each architecture has and which hooks do what they say, and a
component the model lacks is refused with InputError and a hint, never a raw exception."""

from __future__ import annotations

import pytest

from engine.errors import InputError
from engine.jobs import Context
from engine.patch_plan import PlanItem, PlanRequest, run_plan, validate_plan
from engine.patching import available_sweeps
from tests.tl_reference import PAIRS

EXPECTED = {
    # family: (read-only or absent components, parallel blocks, per-head writes defined)
    "gpt2": (set(), False, True),
    "gpt_neox": ({"resid_mid"}, True, True),
    "gptj": ({"resid_mid", "pattern"}, True, True),
    "opt": ({"pattern"}, False, True),
    "gpt_neo": ({"pattern"}, False, True),
    "xglm": ({"pattern"}, False, True),
    "llama": (set(), False, True),
    "gemma2": (set(), False, False),
    "olmo2": (set(), False, False),
    "falcon": ({"resid_mid"}, True, True),
    "bloom": (set(), False, True),
}


@pytest.mark.parametrize("family", EXPECTED)
def test_probe_finds_what_each_architecture_has(family_host, family):
    missing, parallel, head_writes = EXPECTED[family]
    caps = family_host(family).caps
    assert set(caps.missing) == missing
    assert caps.parallel_blocks is parallel
    assert (caps.head_dla == "") is head_writes
    for comp in missing:
        assert not caps.has(comp) and comp not in caps.components
        with pytest.raises(InputError) as err:
            caps.require(comp)
        assert err.value.hint


def test_grouped_query_attention_is_described(family_host):
    caps = family_host("llama").caps
    assert (caps.n_heads, caps.n_kv_heads, caps.kv_group) == (4, 2, 2)
    assert family_host("gemma").caps.n_kv_heads == 1


def test_the_sweep_menu_says_why_a_kind_is_missing(family_host):
    kinds = available_sweeps(family_host("gptj").caps)
    assert kinds["head_out"] == "" and kinds["block"] == ""
    assert "parallel" in kinds["resid_mid"]
    assert "read-only" in kinds["head_pattern"] and "read-only" in kinds["head_every"]


@pytest.mark.parametrize("family,item", [("gpt_neox", PlanItem("resid_mid", 1)),
                                         ("opt", PlanItem("pattern", 0, 1))])
def test_plans_refuse_components_the_model_cannot_patch(family_host, family, item):
    host = family_host(family)
    problems = validate_plan([item], host.info)
    assert len(problems) == 1 and "cannot be patched on this model" in problems[0]
    with pytest.raises(InputError):
        run_plan(host, PlanRequest(PAIRS["middle"], (item,)), Context())


def test_kv_heads_in_plans_are_checked_against_the_kv_count(family_host):
    host = family_host("llama")
    assert validate_plan([PlanItem("k", 0, 1)], host.info) == []
    problems = validate_plan([PlanItem("k", 0, 3)], host.info)
    assert "2 key/value heads" in problems[0]
