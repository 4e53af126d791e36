"""Path patching: one sender head's clean-minus-corrupted write, along one path only.

- Sender -> each later receiver head's q / k / v input: TransformerLens's own
  ``patching.get_act_patch_direct_path`` (Wang et al. 2022; one forward per receiver, not batched
  here).
- Sender -> logits directly: the write is added to the corrupted run's final residual stream only
  (before ``ln_final``), so no later layer sees it. That is one ln_final + unembed, no forward.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import InputError
from engine.jobs import JobContext
from engine.patch_pairs import PromptPair, prepare_pairs
from engine.patching import Metric


@dataclass(frozen=True)
class PathPatchRequest:
    pairs: tuple[PromptPair, ...]
    sender_layer: int
    sender_head: int
    component: str = "q"  # receiver input: "q", "k" or "v"
    metric: str = "logit_diff_norm"
    prepend_bos: bool = True


@dataclass(frozen=True)
class PathPatchResult:
    sender: tuple[int, int]
    component: str
    receivers: np.ndarray  # [n_layers, n_heads]; NaN where the layer is not after the sender
    direct_to_logits: float
    clean_value: float
    corrupted_value: float
    metric: str
    seconds: float


@torch.inference_mode()
def run_path_patching(host, request: PathPatchRequest, ctx: JobContext) -> PathPatchResult:
    from transformer_lens import patching as tlp

    started = time.perf_counter()
    info = host.info
    sl, sh = request.sender_layer, request.sender_head
    if not (0 <= sl < info.n_layers and 0 <= sh < info.n_heads):
        raise InputError(f"Head L{sl}H{sh} does not exist in this model "
                         f"({info.n_layers} layers × {info.n_heads} heads).", "Pick another head.")
    if request.component not in ("q", "k", "v"):
        raise InputError(f"Receiver input {request.component!r} is not q, k or v.", "")
    model = host.model
    pairs = prepare_pairs(host, request.pairs, request.prepend_bos)
    metric = Metric(request.metric, pairs)
    last = f"blocks.{info.n_layers - 1}.hook_resid_post"
    z = f"blocks.{sl}.attn.hook_z"
    keep = {z, last}
    clean_logits, clean_cache = model.run_with_cache(pairs.clean, names_filter=lambda n: n in keep)
    corr_logits, corr_cache = model.run_with_cache(pairs.corrupted,
                                                   names_filter=lambda n: n in keep)
    rows = torch.arange(len(request.pairs), device=host.device)
    metric.set_baselines(clean_logits[rows, pairs.positions], corr_logits[rows, pairs.positions])
    ctx.check_cancelled()
    w_o = model.blocks[sl].attn.W_O[sh]
    delta = (clean_cache[z][:, :, sh] - corr_cache[z][:, :, sh]) @ w_o  # [batch, pos, d_model]
    final = (corr_cache[last] + delta)[rows, pairs.positions][:, None, :]
    direct = float(metric(model.unembed(model.ln_final(final))[:, 0, :])[0])
    receivers = np.full((info.n_layers, info.n_heads), np.nan, dtype=np.float32)
    if sl + 1 < info.n_layers:
        ctx.progress(0.2, f"Paths from L{sl}H{sh} into later heads' {request.component}…")
        out = tlp.get_act_patch_direct_path(model, pairs.corrupted, clean_cache, corr_cache,
                                            metric.full_logits_fn(), sl, sh,
                                            component=request.component, verbose=False)
        receivers[sl + 1:] = out[sl + 1:].float().cpu().numpy()
    clean_v, corr_v = metric.baseline_values()
    return PathPatchResult((sl, sh), request.component, receivers, direct, clean_v, corr_v,
                           request.metric, time.perf_counter() - started)
