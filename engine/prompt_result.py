"""The prompt request and its predictions as plain data, without importing torch.

``engine.prompt.run_prompt`` computes a ``PromptResult`` through TransformerLens; the worker also
builds one before torch is imported (``engine.early_prediction``), so these types live apart from
the torch code that fills them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PromptRequest:
    prompt: str
    top_k: int = 10
    prepend_bos: bool | None = None  # None: the model's default (engine.tokens.bos_policy)
    truncate: bool = False


@dataclass(frozen=True)
class PromptResult:
    """Predictions for one prompt. ``top_probs[p, k]`` is the k-th likeliest next token after p."""

    prompt: str
    str_tokens: tuple[str, ...]
    token_ids: np.ndarray  # [pos] int64
    top_ids: np.ndarray  # [pos, k] int64
    top_tokens: tuple[tuple[str, ...], ...]  # [pos][k]
    top_probs: np.ndarray  # [pos, k] float32
    loss_per_token: np.ndarray  # [pos-1] float32: -log p(token[p+1] | tokens[:p+1])
    truncated_from: int = 0  # original token count when the prompt was truncated, else 0

    @property
    def mean_loss(self) -> float:
        return float(self.loss_per_token.mean()) if self.loss_per_token.size else float("nan")
