"""The attention of a few pinned heads, as a session keeps it.

Every head's pattern on a long prompt is hundreds of megabytes; a session keeps only the heads the
user pinned, as float16 (``[n_pinned, q, k]`` per prompt, attention in [0, 1], so about 3
significant digits). Opening the session turns them back into an ``AttentionResult`` that holds
only the pinned heads' layers, every other head NaN, and says so in its notes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.attention import AttentionItem, AttentionResult
from engine.errors import InputError

MAX_PINS = 64


@dataclass(frozen=True)
class PinnedAttention:
    heads: tuple[tuple[int, int], ...]  # (layer, head) of each pinned head
    labels: tuple[str, ...]  # one per prompt (batch item)
    str_tokens: tuple[tuple[str, ...], ...]
    token_ids: tuple[np.ndarray, ...]  # [pos] int64, per item
    patterns: tuple[np.ndarray, ...]  # [n_pinned, pos, pos] float16, per item
    n_heads: int
    n_key_value_heads: int = 0
    truncated_from: tuple[int, ...] = ()


def pin(result: AttentionResult, heads) -> PinnedAttention:
    """The pinned ``heads`` of ``result`` (heads the result lacks are NaN)."""
    heads = tuple((int(la), int(h)) for la, h in heads)[:MAX_PINS]
    if not heads:
        raise InputError("No head is pinned.", "Pin a head in the attention panel first.")
    rows = {layer: i for i, layer in enumerate(result.layers)}
    patterns = []
    for item in result.items:
        n = item.n_tokens
        out = np.full((len(heads), n, n), np.nan, dtype=np.float16)
        for j, (layer, head) in enumerate(heads):
            if layer in rows and 0 <= head < result.n_heads:
                out[j] = item.patterns[rows[layer], head]
        patterns.append(out)
    return PinnedAttention(heads, tuple(it.label for it in result.items),
                           tuple(tuple(it.str_tokens) for it in result.items),
                           tuple(np.asarray(it.token_ids, dtype=np.int64) for it in result.items),
                           tuple(patterns), int(result.n_heads), int(result.n_key_value_heads),
                           tuple(int(it.truncated_from) for it in result.items))


def unpin(saved: PinnedAttention, n_layers: int) -> AttentionResult:
    """An AttentionResult of the pinned heads' layers; other heads NaN. Checks every shape
    (the data comes from a file): InputError if it does not fit this model."""
    heads = saved.heads
    n_items = len(saved.labels)
    fits = (isinstance(heads, tuple) and 0 < len(heads) <= MAX_PINS and n_items > 0
            and isinstance(saved.n_heads, int) and saved.n_heads > 0
            and all(isinstance(h, tuple) and len(h) == 2 and 0 <= h[0] < n_layers
                    and 0 <= h[1] < saved.n_heads for h in heads)
            and all(len(x) == n_items for x in (saved.str_tokens, saved.token_ids,
                                                 saved.patterns)))
    if fits:
        for tokens, ids, pattern in zip(saved.str_tokens, saved.token_ids, saved.patterns,
                                        strict=True):
            n = len(tokens)
            fits = fits and (isinstance(pattern, np.ndarray) and pattern.dtype == np.float16
                             and pattern.shape == (len(heads), n, n)
                             and isinstance(ids, np.ndarray) and ids.shape == (n,))
    if not fits:
        raise InputError("The saved attention patterns do not fit this model.",
                         "Run the prompt to compute them again.")
    layers = tuple(sorted({layer for layer, _ in heads}))
    rows = {layer: i for i, layer in enumerate(layers)}
    items = []
    for i, label in enumerate(saved.labels):
        n = len(saved.str_tokens[i])
        full = np.full((len(layers), saved.n_heads, n, n), np.nan, dtype=np.float32)
        for j, (layer, head) in enumerate(heads):
            full[rows[layer], head] = saved.patterns[i][j]
        trunc = saved.truncated_from[i] if i < len(saved.truncated_from) else 0
        items.append(AttentionItem(str(label), tuple(str(t) for t in saved.str_tokens[i]),
                                   saved.token_ids[i], full, None, int(trunc)))
    names = ", ".join(f"L{la}H{h}" for la, h in heads)
    note = (f"From the session: only the pinned heads ({names}) were saved, as float16 "
            "(about 3 significant digits); the other heads are blank. Run the prompt to compute "
            "every head.")
    return AttentionResult(tuple(items), layers, saved.n_heads, layers, (),
                           saved.n_key_value_heads, (note,))
