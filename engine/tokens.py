"""Tokenisation helpers: visible string tokens, single-token answers, context-length checks."""

from __future__ import annotations

import torch

from engine.errors import InputError, PromptTooLong

_VISIBLE = str.maketrans({" ": "·", "\n": "↵", "\t": "⇥", "\r": "␍"})


def visible(token: str) -> str:
    """Make whitespace visible so ' the' and 'the' look different on an axis."""
    return token.translate(_VISIBLE) if token else "∅"


def str_tokens(host, tokens: torch.Tensor) -> list[str]:
    """Decoded string tokens of a 1-D or [1, pos] id tensor."""
    ids = tokens.reshape(-1).tolist()
    return [host.tokenizer.decode([i]) for i in ids]


def bos_policy(host, prepend_bos: bool | None) -> bool:
    """The one BOS policy every panel uses: the model's own default (GPT-2 prepends BOS, Pythia
    and BLOOM do not) unless the user chose explicitly."""
    if prepend_bos is not None:
        return bool(prepend_bos)
    info = getattr(host, "info", None)
    if info is not None and hasattr(info, "default_prepend_bos"):
        return bool(info.default_prepend_bos)
    return bool(getattr(host.model.cfg, "default_prepend_bos", True))


def tokenize(host, text: str, prepend_bos: bool | None = None,
             truncate: bool = False) -> torch.Tensor:
    """Token ids [1, pos] on the host's device; empty or over-long prompts raise clear errors.
    ``prepend_bos=None`` follows the model's default (``bos_policy``)."""
    if text is None or not text.strip():
        raise InputError("The prompt is empty.", "Type some text to run the model on.")
    prepend_bos = bos_policy(host, prepend_bos)
    tokens = host.model.to_tokens(text, prepend_bos=prepend_bos, truncate=False)
    n_ctx = host.info.n_ctx
    if tokens.shape[-1] > n_ctx:
        if not truncate:
            raise PromptTooLong(int(tokens.shape[-1]), n_ctx)
        keep = tokens[:, -n_ctx:]
        if prepend_bos:
            keep = torch.cat([tokens[:, :1], tokens[:, -(n_ctx - 1):]], dim=1)
        tokens = keep
    return tokens.to(host.device)


def single_token_id(host, answer: str, field: str = "Answer") -> int:
    """The id of ``answer`` if it is exactly one token, else a message listing its pieces."""
    if answer is None or answer == "":
        raise InputError(f"{field} is empty.", "Type a token, e.g. ' Paris' with its leading space.")
    ids = host.model.to_tokens(answer, prepend_bos=False).reshape(-1).tolist()
    if len(ids) != 1:
        pieces = " + ".join(repr(host.tokenizer.decode([i])) for i in ids)
        hint = "Pick a single-token answer."
        if not answer.startswith(" "):
            hint += " Words after a space usually need their leading space, e.g. ' Paris'."
        raise InputError(f"{answer!r} is {len(ids)} tokens for this model: {pieces}.", hint)
    return int(ids[0])


def leading_space_note(host, text: str, field: str = "Answer") -> str:
    """A note when ``text`` lacks a leading space and tokenises differently with one.

    After a word, GPT-2-style tokenizers fold the space into the next token: the answer to "The
    Eiffel Tower is in" is " Paris", not "Paris" (another token, or several). Empty when the text
    starts with whitespace or both spellings give the same tokens.
    """
    if not text or text[0].isspace():
        return ""
    plain = host.model.to_tokens(text, prepend_bos=False).reshape(-1).tolist()
    spaced = host.model.to_tokens(" " + text, prepend_bos=False).reshape(-1).tolist()
    if plain == spaced:
        return ""

    def show(ids: list[int]) -> str:
        return " + ".join(repr(host.tokenizer.decode([i])) for i in ids)

    what = "token" if len(plain) == 1 else f"{len(plain)} tokens"
    return (f"{field} {text!r} has no leading space: it is {what} {show(plain)}, but "
            f"{' ' + text!r} (a word after a space, as in most prompts) is {show(spaced)}. "
            f"Did you mean {' ' + text!r}?")
