"""Live checks of the lessons: each step's expected result, evaluated on the panels' results.

A check is plain data from a lesson file::

    {"measure": "head_score", "args": {"score": "induction", "layer": 1, "head": 1},
     "op": ">", "value": 0.9, "name": "L1H1 induction score"}

or ``{"all": [check, ...]}``. ``evaluate(check, observed)`` reads the newest result each panel
received (``Observed.results``, by the controller's channel names) and the selected head, and
says *pending* (the student has not produced the result yet: the text says what to do), *pass*
or *fail* (with the value measured). Measures are small functions of the engine's result
dataclasses; none recomputes anything, so what turns green is what the student's panel shows.
No Qt here.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PENDING, PASS, FAIL = "pending", "pass", "fail"


class NotYet(Exception):
    """The result a measure needs is not there (yet); the message says how to produce it."""


@dataclass
class Observed:
    results: dict[str, Any] = field(default_factory=dict)  # channel -> newest result
    selected_head: tuple[int, int] = (-1, -1)


@dataclass(frozen=True)
class Outcome:
    state: str
    text: str


def head_label(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def _result(obs: Observed, channel: str, todo: str):
    r = obs.results.get(channel)
    if r is None:
        raise NotYet(todo)
    return r


# -- predictions ----------------------------------------------------------------------------------
def _prompt_result(obs: Observed, prompt: str | None):
    r = _result(obs, "predictions", "Run the prompt.")
    if prompt is not None and r.prompt != prompt:
        raise NotYet(f"Run the prompt {prompt!r}.")
    return r


def top_token(obs: Observed, position: int = -1, prompt: str | None = None) -> str:
    r = _prompt_result(obs, prompt)
    return r.top_tokens[position][0]


def top_prob(obs: Observed, position: int = -1, prompt: str | None = None) -> float:
    r = _prompt_result(obs, prompt)
    return float(r.top_probs[position, 0])


def mean_loss(obs: Observed, start: int, end: int, prompt: str | None = None) -> float:
    """Mean loss on predicting tokens start..end-1 (token indices, BOS = 0)."""
    r = _prompt_result(obs, prompt)
    return float(np.mean(r.loss_per_token[start - 1:end - 1]))


# -- selection and attention ----------------------------------------------------------------------
def selected_head(obs: Observed, layer: int, head: int) -> str:
    """The selected head, once it is the one the step asks for (until then: pending)."""
    wanted = head_label(layer, head)
    if tuple(obs.selected_head) != (layer, head):
        raise NotYet(f"Click {wanted}.")
    return wanted


def _pattern(obs: Observed, layer: int, head: int, prompt: str | None) -> np.ndarray:
    r = _result(obs, "attention", "Open the Attention panel (run the prompt if it is empty).")
    item = r.items[0]
    if prompt is not None and item.label != prompt:
        raise NotYet(f"Show the attention of the prompt {prompt!r}.")
    if layer not in r.layers:
        raise NotYet(f"Show the attention of layer {layer}.")
    return item.patterns[r.layers.index(layer), head]


def previous_token_attention(obs: Observed, layer: int, head: int,
                             prompt: str | None = None) -> float:
    """Mean attention from each token to the one before it (the previous-token score)."""
    p = _pattern(obs, layer, head, prompt)
    return float(np.mean([p[q, q - 1] for q in range(1, p.shape[0])]))


def induction_attention(obs: Observed, layer: int, head: int, prompt: str | None = None) -> float:
    """Mean attention from a repeated token to the token after its earlier occurrence(s)."""
    r = obs.results.get("attention")
    p = _pattern(obs, layer, head, prompt)
    ids = [int(t) for t in r.items[0].token_ids]
    scores = []
    for q in range(1, len(ids)):
        targets = [k + 1 for k in range(1, q - 1) if ids[k] == ids[q]]
        if targets:
            scores.append(float(p[q, targets].sum()))
    if not scores:
        raise NotYet("Use a prompt that repeats itself.")
    return float(np.mean(scores))


# -- induction scanner ----------------------------------------------------------------------------
def _scan(obs: Observed):
    return _result(obs, "induction", "Press Scan in the Induction heads panel.")


def head_score(obs: Observed, score: str, layer: int, head: int) -> float:
    return float(_scan(obs).repeated[score][layer, head])


def best_head(obs: Observed, score: str) -> str:
    m = _scan(obs).repeated[score]
    layer, head = np.unravel_index(int(np.nanargmax(m)), m.shape)
    return head_label(int(layer), int(head))


def repeat_loss(obs: Observed, copy: str = "second") -> float:
    r = _scan(obs)
    return float(r.second_half_loss if copy == "second" else r.first_half_loss)


def _ablation(obs: Observed, heads):
    wanted = {(int(a), int(b)) for a, b in heads}
    names = " and ".join(head_label(*h) for h in sorted(wanted))
    r = _result(obs, "induction-ablation", f"Ablate {names} in the Induction heads panel.")
    if {tuple(h) for h in r.heads} != wanted:
        raise NotYet(f"Ablate exactly {names} (the last ablation was "
                     f"{' and '.join(head_label(*h) for h in r.heads) or 'none'}).")
    return r


def ablation_rise(obs: Observed, heads) -> float:
    """How much knocking out ``heads`` raised the loss on the repeated half (nats)."""
    return float(_ablation(obs, heads).ablated_rise)


def control_rise_min(obs: Observed, heads) -> float:
    """The smallest rise among the random control sets of the same ablation."""
    r = _ablation(obs, heads)
    if not len(r.control_halves):
        raise NotYet("Ablate with at least one random control set.")
    return float(np.min(r.control_halves[:, 1]) - r.clean_halves[1])


# -- attribution ----------------------------------------------------------------------------------
def _attribution(obs: Observed, answer: str, counterfactual: str | None = None,
                 prompt: str | None = None):
    r = _result(obs, "attribution", f"Run Layer attribution for the answer {answer!r}.")
    if r.answers[0] != answer:
        raise NotYet(f"Set the answer to {answer!r} in Layer attribution and run it "
                     f"(it shows {r.answers[0]!r}).")
    if counterfactual is not None and r.counterfactuals[0] != counterfactual:
        raise NotYet(f"Set the counterfactual to {counterfactual!r} and run again.")
    if prompt is not None and r.prompts[0] != prompt:
        raise NotYet(f"Run the attribution on the prompt {prompt!r}.")
    return r


def lens_rank(obs: Observed, answer: str, entry: str = "final_post",
              prompt: str | None = None) -> int:
    """Rank of the answer (0 = top) in the logit lens at one stream entry (e.g. 0_pre)."""
    r = _attribution(obs, answer, prompt=prompt)
    return int(r.lens_ranks[0, list(r.lens_labels).index(entry)])


def top_component(obs: Observed, answer: str, counterfactual: str | None = None) -> str:
    r = _attribution(obs, answer, counterfactual)
    return r.component_labels[int(np.argmax(r.component_values[0]))]


def top_head_attribution(obs: Observed, answer: str, counterfactual: str | None = None) -> str:
    r = _attribution(obs, answer, counterfactual)
    m = r.head_values[0]
    layer, head = np.unravel_index(int(np.argmax(m)), m.shape)
    return head_label(int(layer), int(head))


def logit_value(obs: Observed, answer: str, counterfactual: str | None = None) -> float:
    """The model's logit (difference) for the target, as the attribution panel shows it."""
    return float(_attribution(obs, answer, counterfactual).final_values[0])


# -- activation patching --------------------------------------------------------------------------
def _sweep(obs: Observed, kind: str):
    r = _result(obs, "patching", "Run a sweep in the Activation patching panel.")
    if r.kind != kind:
        raise NotYet(f"Run the {kind} sweep (the last sweep was {r.kind}).")
    if not r.complete:
        raise NotYet("Wait for the sweep to finish.")
    return r


def sweep_top(obs: Observed, kind: str) -> str:
    r = _sweep(obs, kind)
    idx = np.unravel_index(int(np.nanargmax(r.values)), r.values.shape)
    if r.axes == ("layer", "head"):
        return head_label(int(idx[0]), int(idx[1]))
    return " ".join(f"{a}{int(i)}" for a, i in zip(r.axes, idx, strict=True))


def sweep_value(obs: Observed, kind: str, index: list[int]) -> float:
    """One cell; a negative position counts from the end, as in Python."""
    r = _sweep(obs, kind)
    return float(r.values[tuple(int(i) for i in index)])


MEASURES: dict[str, Callable[..., Any]] = {f.__name__: f for f in (
    top_token, top_prob, mean_loss, selected_head, previous_token_attention, induction_attention,
    head_score, best_head, repeat_loss, ablation_rise, control_rise_min, lens_rank,
    top_component, top_head_attribution, logit_value, sweep_top, sweep_value)}

OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne, "in": lambda a, b: a in b,
}


def validate(check: dict) -> list[str]:
    """Problems with a check's form (unknown measure, operator, arguments); [] when fine."""
    if not isinstance(check, dict):
        return ["a check must be an object"]
    if "all" in check:
        parts = check["all"]
        if not isinstance(parts, list) or not parts:
            return ["'all' must be a non-empty list of checks"]
        return [p for part in parts for p in validate(part)]
    problems = []
    fn = MEASURES.get(check.get("measure"))
    if fn is None:
        problems.append(f"unknown measure {check.get('measure')!r}")
    if check.get("op") not in OPS:
        problems.append(f"unknown operator {check.get('op')!r}")
    if "value" not in check:
        problems.append("no expected value")
    args = check.get("args", {})
    if not isinstance(args, dict):
        problems.append("args must be an object")
    elif fn is not None:
        import inspect

        params = inspect.signature(fn).parameters
        unknown = [a for a in args if a not in params or a == "obs"]
        if unknown:
            problems.append(f"{fn.__name__} has no argument {unknown[0]!r}")
    return problems


def _show(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3g}" if abs(value) < 1000 else \
            f"{value:.0f}"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def evaluate(check: dict, obs: Observed) -> Outcome:
    if "all" in check:
        outcomes = [evaluate(part, obs) for part in check["all"]]
        for state in (PENDING, FAIL):  # a step is not wrong before it can be checked
            hit = [o for o in outcomes if o.state == state]
            if hit:
                return Outcome(state, "; ".join(o.text for o in hit))
        return Outcome(PASS, "; ".join(o.text for o in outcomes))
    fn = MEASURES[check["measure"]]
    name = check.get("name") or check["measure"].replace("_", " ")
    try:
        value = fn(obs, **check.get("args", {}))
    except NotYet as exc:
        return Outcome(PENDING, str(exc))
    except (KeyError, IndexError, ValueError) as exc:
        return Outcome(PENDING, f"{name}: not available in the current result ({exc}).")
    expected, op = check["value"], check["op"]
    ok = bool(OPS[op](value, expected))
    if op == "==":
        text = f"{name}: {_show(value)}" if ok else \
            f"{name}: {_show(value)} (expected {_show(expected)})"
    else:
        text = f"{name} = {_show(value)} ({'' if ok else 'expected '}{op} {_show(expected)})"
    return Outcome(PASS if ok else FAIL, text)
