"""Attribution patching: a linear estimate of every cell of a sweep from one forward + backward.

``estimate = (a_clean - a_corrupted) . d metric / d a`` on the corrupted run (denoising), summed
over the entries a cell patches (and the pairs: the metric already averages them). Activations and
gradients come from TransformerLens's ``tools.analysis.attribution_patching
.cache_activation_and_gradient`` (backward hooks, the bridge's canonical shapes). Cheap enough to
screen every component first; ``verify`` cells exactly with ``run_sweep(..., only=...)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import InputError
from engine.jobs import JobContext
from engine.patch_pairs import PromptPair, prepare_pairs
from engine.patching import SWEEP_COMPONENT, SWEEP_LABELS, SWEEPS, Metric, SweepResult, sweep_axes

# The activation layout after the batch axis -> the axes a cell keeps, for each sweep kind.
_KEEP = {("layer", "pos"): ("pos",), ("layer", "head"): ("head",),
         ("layer", "pos", "head"): ("pos", "head")}


@dataclass(frozen=True)
class AttributionPatchRequest:
    pairs: tuple[PromptPair, ...]
    kind: str = "head_out"
    metric: str = "logit_diff_norm"
    prepend_bos: bool | None = None  # None: the model's default (engine.tokens.bos_policy)


def run_attribution_patching(host, request: AttributionPatchRequest,
                             ctx: JobContext) -> SweepResult:
    from transformer_lens.tools.analysis.attribution_patching import (
        cache_activation_and_gradient,
    )

    if request.kind not in SWEEPS:
        raise InputError(f"Attribution patching has no estimate for {request.kind!r}.",
                         "Use one of " + ", ".join(SWEEPS))
    host.caps.require(SWEEP_COMPONENT[request.kind], SWEEP_LABELS[request.kind])
    started = time.perf_counter()
    template, axes, layout = SWEEPS[request.kind]
    model = host.model
    n_layers = host.info.n_layers
    names = [template.format(layer) for layer in range(n_layers)]
    with torch.no_grad():  # not inference_mode: these tokens feed the backward pass below
        pairs = prepare_pairs(host, request.pairs, request.prepend_bos)
        metric = Metric(request.metric, pairs)
        rows = torch.arange(len(request.pairs), device=host.device)
        clean_logits = model(pairs.clean)
        corr_logits = model(pairs.corrupted)
        metric.set_baselines(clean_logits[rows, pairs.positions],
                             corr_logits[rows, pairs.positions])
    ctx.check_cancelled()
    ctx.progress(0.2, "Clean run…")
    fn = metric.full_logits_fn()
    # hook_embed rides along: with only attn.hook_z points requested the bridge's backward hooks
    # returned no gradients at all (TransformerLens 4.3); with the embedding point they do.
    wanted = [*names, "hook_embed"]
    with torch.enable_grad():
        clean = cache_activation_and_gradient(model, pairs.clean, fn, names_filter=wanted,
                                              compute_gradient=False)
        ctx.check_cancelled()
        ctx.progress(0.5, "Corrupted run, forward and backward…")
        corr = cache_activation_and_gradient(model, pairs.corrupted, fn, names_filter=wanted)
    ctx.check_cancelled()
    keep = _KEEP[axes]
    per_layer = []
    for name in names:
        grad = corr.gradients.get(name)
        if grad is None:
            raise RuntimeError(f"No gradient reached {name}; attribution patching cannot "
                               "estimate this sweep on this model.")
        prod = (clean.activations[name] - corr.activations[name]) * grad
        dims = [0] + [1 + i for i, d in enumerate(layout) if d not in keep]
        out = prod.sum(dim=dims)
        kept = [d for d in layout if d in keep]
        if tuple(kept) != tuple(a for a in axes if a != "layer"):
            out = out.transpose(0, 1)
        per_layer.append(out.detach().float())
    values = torch.stack(per_layer).cpu().numpy().astype(np.float32)
    clean_v, corr_v = metric.baseline_values()
    ctx.progress(1.0, "done")
    info = host.info
    axes = sweep_axes(request.kind, info.n_heads, info.n_key_value_heads)
    return SweepResult(request.kind, request.metric, "denoise", axes, values, values.size,
                       values.size, clean_v, corr_v, tuple(pairs.clean_str[0]),
                       tuple(pairs.corrupted_str[0]), time.perf_counter() - started, 0, True,
                       {"estimate": "attribution patching", "components": (request.kind,),
                        "part_shapes": {request.kind: values.shape},
                        "part_axes": {request.kind: axes},
                        "raw_baselines": (metric.hi, metric.lo)},
                       "linear estimate: one forward and backward pass (TransformerLens's "
                       "cache_activation_and_gradient)")


def correlation(estimate: np.ndarray, exact: np.ndarray) -> float:
    """Pearson correlation over the cells both have (NaN where undefined)."""
    a, b = np.asarray(estimate, float).ravel(), np.asarray(exact, float).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def top_k_cells(estimate: np.ndarray, k: int) -> tuple[int, ...]:
    """Flat indices of the k cells with the largest |estimate|."""
    flat = np.nan_to_num(np.abs(np.asarray(estimate, float).ravel()), nan=-1.0)
    return tuple(int(i) for i in np.argsort(-flat)[: max(0, k)])
