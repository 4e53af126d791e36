"""Clean/corrupted prompt pairs: tokenise, align, check, and explain what does not line up."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import InputError
from engine.jobs import JobContext
from engine.targets import Target, resolve_target
from engine.tokens import leading_space_note, str_tokens, tokenize


@dataclass(frozen=True)
class PromptPair:
    clean: str
    corrupted: str
    answer: str
    counterfactual: str = ""
    position: int = -1


@dataclass
class PairBatch:
    """Tokenised, checked pairs: clean/corrupted [B, T] ids, answer/cf ids [B], positions [B]."""

    clean: torch.Tensor
    corrupted: torch.Tensor
    answer: torch.Tensor
    counterfactual: torch.Tensor | None
    positions: torch.Tensor
    clean_str: list[list[str]]
    corrupted_str: list[list[str]]


def align_message(clean: list[str], corrupted: list[str]) -> str:
    """Why a pair cannot be patched: where the two token lists stop lining up."""
    n = min(len(clean), len(corrupted))
    first = next((i for i in range(n) if clean[i] != corrupted[i]), n)
    extra = clean[n:] if len(clean) > n else corrupted[n:]
    which = "clean" if len(clean) > n else "corrupted"
    shown = ", ".join(repr(t) for t in extra[:6])
    return (f"The clean prompt has {len(clean)} tokens and the corrupted one {len(corrupted)}; "
            f"they differ from position {first}, and the {which} prompt has extra token(s) "
            f"{shown}.")


def prepare_pairs(host, pairs, prepend_bos: bool | None = None) -> PairBatch:
    if not pairs:
        raise InputError("There is no prompt pair.", "Type a clean and a corrupted prompt.")
    clean, corrupted, ans, cf, pos, cs, rs = [], [], [], [], [], [], []
    for i, pair in enumerate(pairs):
        tag = f"Pair {i + 1}: " if len(pairs) > 1 else ""
        try:
            c = tokenize(host, pair.clean, prepend_bos)
            r = tokenize(host, pair.corrupted, prepend_bos)
        except InputError as exc:
            raise InputError(tag + exc.message, exc.hint) from exc
        c_str, r_str = str_tokens(host, c), str_tokens(host, r)
        if c.shape[-1] != r.shape[-1]:
            raise InputError(tag + align_message(c_str, r_str),
                             "Patching needs the same number of tokens in both prompts; "
                             "change words for words of the same token length.")
        if clean and c.shape[-1] != clean[0].shape[-1]:
            raise InputError(f"{tag}has {c.shape[-1]} tokens but pair 1 has "
                             f"{clean[0].shape[-1]}.", "All pairs in a batch need the same "
                             "token length (they run stacked).")
        try:
            t = resolve_target(host, Target(pair.answer, pair.counterfactual, pair.position),
                               int(c.shape[-1]))
        except InputError as exc:
            raise InputError(tag + exc.message, exc.hint) from exc
        if i and (t.counterfactual_id is None) != (cf[0] is None):
            raise InputError(tag + "Give a counterfactual for every pair or for none.",
                             "The metric is the same for every pair in a batch.")
        clean.append(c)
        corrupted.append(r)
        ans.append(t.answer_id)
        cf.append(t.counterfactual_id)
        pos.append(t.position)
        cs.append(c_str)
        rs.append(r_str)
    dev = host.device
    cf_t = None if cf[0] is None else torch.tensor(cf, device=dev)
    return PairBatch(torch.cat(clean), torch.cat(corrupted), torch.tensor(ans, device=dev), cf_t,
                     torch.tensor(pos, device=dev), cs, rs)




@dataclass(frozen=True)
class PairCheckRequest:
    pairs: tuple[PromptPair, ...]
    prepend_bos: bool | None = None  # None: the model's default (engine.tokens.bos_policy)


@dataclass(frozen=True)
class PairCheck:
    """Per pair: the string tokens of both prompts, the differing positions, and a problem
    message (empty when the pair can be patched)."""

    clean_tokens: tuple[tuple[str, ...], ...]
    corrupted_tokens: tuple[tuple[str, ...], ...]
    differing: tuple[tuple[int, ...], ...]
    problems: tuple[str, ...]
    message: str  # the first problem of the whole batch (lengths, answers...), or ""
    notes: tuple[str, ...] = ()  # not errors: e.g. an answer typed without its leading space


@torch.inference_mode()
def check_pairs(host, request: PairCheckRequest, ctx: JobContext) -> PairCheck:
    """Tokenise every pair for the side-by-side view; never raises for a bad pair."""
    clean, corrupted, differing, problems = [], [], [], []
    for pair in request.pairs:
        c = r = ()
        problem = ""
        try:
            c = tuple(str_tokens(host, tokenize(host, pair.clean, request.prepend_bos)))
            r = tuple(str_tokens(host, tokenize(host, pair.corrupted, request.prepend_bos)))
        except InputError as exc:
            problem = f"{exc.message} {exc.hint}".strip()
        if not problem and len(c) != len(r):
            problem = align_message(list(c), list(r))
        clean.append(c)
        corrupted.append(r)
        differing.append(tuple(i for i in range(max(len(c), len(r)))
                               if i >= len(c) or i >= len(r) or c[i] != r[i]))
        problems.append(problem)
    message = next((f"Pair {i + 1}: {p}" if len(problems) > 1 else p
                    for i, p in enumerate(problems) if p), "")
    if not message:
        try:
            prepare_pairs(host, request.pairs, request.prepend_bos)
        except InputError as exc:
            message = f"{exc.message} {exc.hint}".strip()
    notes = []
    for i, pair in enumerate(request.pairs):
        tag = f"Pair {i + 1}: " if len(request.pairs) > 1 else ""
        for name, text in (("Answer", pair.answer), ("Counterfactual", pair.counterfactual)):
            note = leading_space_note(host, text, name)
            if note and tag + note not in notes:
                notes.append(tag + note)
    return PairCheck(tuple(clean), tuple(corrupted), tuple(differing), tuple(problems), message,
                     tuple(notes))
