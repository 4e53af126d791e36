"""Attention patterns (and optionally pre-softmax scores) of every head on one or more prompts.

Only the ``hook_pattern`` / ``hook_attn_scores`` hooks are cached (a names filter on TransformerLens's
``run_with_cache``), never a full cache. Each layer's tensor is copied into one preallocated
float32 array and dropped from the cache straight away: a 1024-token prompt on a 12x12 model keeps
0.6 GB of patterns (peak about twice that during the copy), where an unfiltered cache would keep
every activation as well.

Models that lack the hooks on some layers, or use grouped-query attention, still give a result:
layers without a pattern are NaN, and ``notes`` says what is missing so the panel can tell the user.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from engine.errors import InputError
from engine.jobs import JobContext
from engine.tokens import bos_policy, str_tokens, tokenize

PATTERN_HOOK = "blocks.{layer}.attn.hook_pattern"
SCORES_HOOK = "blocks.{layer}.attn.hook_attn_scores"
#: Refuse jobs whose arrays would exceed this (the UI suggests fewer layers or a shorter prompt).
MAX_BYTES = 6 * 2**30


@dataclass(frozen=True)
class AttentionRequest:
    """What to compute attention for.

    ``prompts``: one or more prompt texts (each is one batch item), or ``token_ids``: explicit
    token sequences (e.g. BOS + random tokens repeated, from the induction scanner), used as they
    are. ``layers``: a subset of layers (None = all). ``scores``: also return pre-softmax scores.
    """

    prompts: tuple[str, ...] = ()
    token_ids: tuple[tuple[int, ...], ...] = ()
    labels: tuple[str, ...] = ()
    scores: bool = False
    layers: tuple[int, ...] | None = None
    prepend_bos: bool | None = None  # None: the model's default (engine.tokens.bos_policy)
    truncate: bool = False


@dataclass(frozen=True)
class AttentionItem:
    """One sequence's attention. ``patterns[l, h, q, k]`` is the attention query q pays to key k in
    head h of ``layers[l]`` (row-stochastic); ``scores`` the same before softmax, masked cells NaN."""

    label: str
    str_tokens: tuple[str, ...]
    token_ids: np.ndarray  # [pos] int64
    patterns: np.ndarray  # [n_layers_computed, heads, pos, pos] float32; NaN where unavailable
    scores: np.ndarray | None = None  # same shape, float32, NaN where masked or unavailable
    truncated_from: int = 0

    @property
    def n_tokens(self) -> int:
        return len(self.str_tokens)


@dataclass(frozen=True)
class AttentionResult:
    items: tuple[AttentionItem, ...]
    layers: tuple[int, ...]  # model layer index of each row of ``patterns``
    n_heads: int
    layers_with_pattern: tuple[int, ...]  # layers whose pattern hook exists and fired
    layers_with_scores: tuple[int, ...]
    n_key_value_heads: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)  # what is not available, for the user

    @property
    def nbytes(self) -> int:
        return sum(it.patterns.nbytes + (it.scores.nbytes if it.scores is not None else 0)
                   for it in self.items)

    @property
    def scores_available(self) -> bool:
        return bool(self.layers_with_scores)


def hook_names(layer: int) -> tuple[str, str]:
    return PATTERN_HOOK.format(layer=layer), SCORES_HOOK.format(layer=layer)


def _sequences(host, request: AttentionRequest) -> list[tuple[str, torch.Tensor, int]]:
    """(label, token ids [1, pos], truncated_from) for every batch item; errors name the item.

    Prompts come first, then explicit token sequences (e.g. the induction scanner's repeated
    random tokens shown next to the user's prompt); ``labels`` name them in that order.
    """
    out: list[tuple[str, torch.Tensor, int]] = []
    n_ctx = host.info.n_ctx
    for i, text in enumerate(request.prompts):
        tokens = tokenize(host, text, request.prepend_bos, request.truncate)
        full = 0
        if request.truncate:
            n_full = host.model.to_tokens(text, prepend_bos=bos_policy(host, request.prepend_bos),
                                          truncate=False).shape[-1]
            full = int(n_full) if n_full > tokens.shape[-1] else 0
        label = request.labels[i] if i < len(request.labels) else text
        out.append((label, tokens, full))
    d_vocab = host.info.d_vocab
    for j, ids in enumerate(request.token_ids):
        i = len(request.prompts) + j
        label = request.labels[i] if i < len(request.labels) else f"tokens {j}"
        ids = [int(t) for t in ids]
        if not ids:
            raise InputError(f"{label}: the token sequence is empty.", "Give at least 1 token.")
        bad = [t for t in ids if not 0 <= t < d_vocab]
        if bad:
            raise InputError(f"{label}: token id {bad[0]} is outside the vocabulary "
                             f"(0..{d_vocab - 1}).", "Use ids of this model's tokenizer.")
        if len(ids) > n_ctx:
            raise InputError(f"{label}: {len(ids)} tokens, but the model's context is "
                             f"{n_ctx} tokens.", "Use a shorter sequence.")
        out.append((label, torch.tensor([ids], dtype=torch.long, device=host.device), 0))
    if not out:
        raise InputError("There is no prompt to show attention for.", "Type a prompt and run it.")
    return out


@torch.inference_mode()
def run_attention(host, request: AttentionRequest, ctx: JobContext) -> AttentionResult:
    model, info = host.model, host.info
    layers = tuple(range(info.n_layers)) if request.layers is None else tuple(request.layers)
    if not layers or any(not 0 <= layer < info.n_layers for layer in layers):
        raise InputError(f"Layers {list(layers)} are not all in 0..{info.n_layers - 1}.",
                         "Choose existing layers.")
    hook_dict = getattr(model, "hook_dict", {}) or {}
    want: set[str] = set()
    for layer in layers:
        pattern_name, scores_name = hook_names(layer)
        if pattern_name in hook_dict:
            want.add(pattern_name)
        if request.scores and scores_name in hook_dict:
            want.add(scores_name)
    if not any(n.endswith("hook_pattern") for n in want):
        raise InputError(
            f"{info.name} exposes no attention-pattern hooks (blocks.L.attn.hook_pattern), so "
            "its attention cannot be shown.",
            "This architecture's attention is not hooked by TransformerLens 4; other panels may "
            "still work.")
    sequences = _sequences(host, request)
    n_heads = info.n_heads
    total = sum(len(layers) * n_heads * t.shape[-1] ** 2 * 4 * (2 if request.scores else 1)
                for _, t, _ in sequences)
    if total > MAX_BYTES:
        raise InputError(f"These attention arrays would take {total / 2**30:.1f} GiB.",
                         "Use a shorter prompt, fewer prompts, or turn off scores.")
    stop = max(layers) + 1
    stop_kwargs = {"stop_at_layer": stop} if stop < info.n_layers else {}
    items: list[AttentionItem] = []
    fired_pattern: set[int] = set(layers)
    fired_scores: set[int] = set(layers) if request.scores else set()
    for i, (label, tokens, truncated_from) in enumerate(sequences):
        ctx.check_cancelled()
        ctx.progress(0.05 + 0.9 * i / len(sequences),
                     f"Running the model on {label[:40]!r} ({tokens.shape[-1]} tokens)…")
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in want,
                                        **stop_kwargs)
        ctx.check_cancelled()
        store = cache.cache_dict if hasattr(cache, "cache_dict") else cache
        n = tokens.shape[-1]
        first = next((store[hook_names(la)[0]] for la in layers
                      if store.get(hook_names(la)[0]) is not None), None)
        heads = int(first.shape[1]) if first is not None else n_heads
        patterns = np.empty((len(layers), heads, n, n), dtype=np.float32)
        scores = (np.empty((len(layers), heads, n, n), dtype=np.float32)
                  if request.scores else None)
        for row, layer in enumerate(layers):
            pattern_name, scores_name = hook_names(layer)
            t = store.pop(pattern_name, None)
            if t is not None and tuple(t.shape[1:]) == (heads, n, n):
                patterns[row] = t[0].float().cpu().numpy()
            else:
                patterns[row] = np.nan
                fired_pattern.discard(layer)
            del t
            if scores is not None:
                s = store.pop(scores_name, None)
                scores[row] = np.nan
                if s is not None and tuple(s.shape[1:]) == (heads, n, n):
                    arr = s[0].float().cpu().numpy()  # masked cells are -inf: shown as NaN
                    np.copyto(scores[row], arr, where=np.isfinite(arr))
                else:
                    fired_scores.discard(layer)
                del s
        del cache, store
        items.append(AttentionItem(label=label, str_tokens=tuple(str_tokens(host, tokens)),
                                   token_ids=tokens[0].cpu().numpy().astype(np.int64),
                                   patterns=patterns, scores=scores,
                                   truncated_from=truncated_from))
    notes = _notes(info, layers, fired_pattern, fired_scores, request.scores,
                   heads=items[0].patterns.shape[1])
    if not fired_pattern:
        raise InputError(f"{info.name}'s attention-pattern hooks did not fire, so its attention "
                         "cannot be shown.", "This architecture may compute attention in a fused "
                         "kernel TransformerLens does not hook.")
    ctx.progress(1.0, "Done")
    return AttentionResult(items=tuple(items), layers=layers, n_heads=items[0].patterns.shape[1],
                           layers_with_pattern=tuple(sorted(fired_pattern)),
                           layers_with_scores=tuple(sorted(fired_scores)),
                           n_key_value_heads=info.n_key_value_heads, notes=tuple(notes))


def _notes(info, layers, fired_pattern, fired_scores, want_scores, heads) -> list[str]:
    notes = []
    missing = [la for la in layers if la not in fired_pattern]
    if missing:
        notes.append(f"No attention pattern for layer(s) {_ranges(missing)}: the hook is missing "
                     "or did not fire (shown blank).")
    if want_scores:
        missing_scores = [la for la in layers if la not in fired_scores]
        if missing_scores:
            notes.append(f"No pre-softmax scores for layer(s) {_ranges(missing_scores)}.")
    if info.is_gqa:
        group = max(1, info.n_heads // max(1, info.n_key_value_heads))
        notes.append(f"Grouped-query attention: {info.n_heads} query heads share "
                     f"{info.n_key_value_heads} key/value heads (groups of {group}); patterns are "
                     "per query head, keys and values are shared within a group.")
    if heads != info.n_heads:
        notes.append(f"The pattern hooks report {heads} heads, the config {info.n_heads}.")
    return notes


def _ranges(values: list[int]) -> str:
    return ", ".join(str(v) for v in values) if len(values) <= 6 else \
        f"{values[0]}–{values[-1]} ({len(values)} layers)"
