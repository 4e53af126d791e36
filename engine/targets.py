"""The answer a panel explains: one token's logit, or answer minus counterfactual, at a position.

Shared by the attribution panel and the patching editor. Every check here produces a message the
UI can show next to the input field.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import InputError
from engine.tokens import leading_space_note, single_token_id


@dataclass(frozen=True)
class Target:
    """``answer`` (e.g. " Paris"), optional ``counterfactual`` (" John"), ``position`` (-1 = last)."""

    answer: str
    counterfactual: str = ""
    position: int = -1


@dataclass(frozen=True)
class ResolvedTarget:
    answer_id: int
    counterfactual_id: int | None
    position: int  # non-negative index into the sequence

    @property
    def is_difference(self) -> bool:
        return self.counterfactual_id is not None

    def direction(self, model) -> torch.Tensor:
        """The unembedding direction [d_model] whose dot product with the final residual
        (after ln_final) is the target's logit or logit difference."""
        w_u = model.W_U
        d = w_u[:, self.answer_id]
        if self.counterfactual_id is not None:
            d = d - w_u[:, self.counterfactual_id]
        return d

    def metric(self, logits: torch.Tensor) -> torch.Tensor:
        """The target's value from logits [batch, pos, vocab] -> [batch]."""
        at = logits[:, self.position, :]
        value = at[:, self.answer_id]
        if self.counterfactual_id is not None:
            value = value - at[:, self.counterfactual_id]
        return value


def resolve_target(host, target: Target, n_tokens: int) -> ResolvedTarget:
    """Check the target against the model and prompt length; raise InputError with a hint."""
    answer_id = single_token_id(host, target.answer, "Answer")
    cf_id = None
    if target.counterfactual:
        cf_id = single_token_id(host, target.counterfactual, "Counterfactual")
        if cf_id == answer_id:
            raise InputError("The answer and the counterfactual are the same token.",
                             "Pick a different counterfactual, or leave it empty to attribute "
                             "the answer's logit alone.")
    pos = target.position
    if not -n_tokens <= pos < n_tokens:
        raise InputError(f"Position {pos} is out of range for a {n_tokens}-token prompt.",
                         f"Use 0..{n_tokens - 1}, or -1 for the last position.")
    return ResolvedTarget(answer_id, cf_id, pos % n_tokens)


@dataclass(frozen=True)
class SpellingRequest:
    """Fields to check as the user types: ``((field name, text), ...)``."""

    fields: tuple[tuple[str, str], ...]


def spelling_notes(host, request: SpellingRequest, ctx=None) -> tuple[str, ...]:
    """Leading-space notes for each field (see :func:`engine.tokens.leading_space_note`)."""
    notes = (leading_space_note(host, text, name) for name, text in request.fields)
    return tuple(n for n in notes if n)
