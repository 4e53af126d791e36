"""The first analysis: run a prompt, top-k next tokens at every position, loss per token.

``PromptRequest`` and ``PromptResult`` live in ``engine.prompt_result`` (no torch) and are
re-exported here.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.jobs import JobContext
from engine.prompt_result import PromptRequest, PromptResult
from engine.tokens import bos_policy, str_tokens, tokenize

__all__ = ["PromptRequest", "PromptResult", "log_probs", "run_prompt"]


def log_probs(host, tokens: torch.Tensor) -> torch.Tensor:
    """Log-softmax of the model's logits [batch, pos, vocab] in float32."""
    logits = host.model(tokens, return_type="logits")
    return torch.log_softmax(logits.float(), dim=-1)


@torch.inference_mode()
def run_prompt(host, request: PromptRequest, ctx: JobContext) -> PromptResult:
    ctx.progress(0.05, "Tokenising…")
    full = host.model.to_tokens(request.prompt, prepend_bos=bos_policy(host, request.prepend_bos),
                                truncate=False) \
        if request.prompt and request.prompt.strip() else None
    tokens = tokenize(host, request.prompt, request.prepend_bos, request.truncate)
    ctx.check_cancelled()
    ctx.progress(0.2, "Running the model…")
    lp = log_probs(host, tokens)[0]
    ctx.check_cancelled()
    k = max(1, min(int(request.top_k), lp.shape[-1]))
    top_lp, top_ids = lp.topk(k, dim=-1)
    ids = tokens[0]
    loss = -lp[:-1].gather(-1, ids[1:, None])[:, 0] if ids.numel() > 1 else lp.new_zeros(0)
    top_ids_np = top_ids.cpu().numpy().astype(np.int64)
    decode = host.tokenizer.decode
    top_tokens = tuple(tuple(decode([int(i)]) for i in row) for row in top_ids_np)
    ctx.progress(1.0, "Done")
    return PromptResult(
        prompt=request.prompt,
        str_tokens=tuple(str_tokens(host, ids)),
        token_ids=ids.cpu().numpy().astype(np.int64),
        top_ids=top_ids_np,
        top_tokens=top_tokens,
        top_probs=top_lp.exp().cpu().numpy().astype(np.float32),
        loss_per_token=loss.cpu().numpy().astype(np.float32),
        truncated_from=int(full.shape[-1]) if full is not None and full.shape[-1] > ids.numel() else 0,
    )
