"""Path patching: sender heads' clean-minus-corrupted writes, along one kind of path only.

Wang et al. 2022's direct path patching, as TransformerLens's ``patching.get_act_patch_direct_path``
defines it, but for a *set* of senders and batched:

- Senders -> each later receiver head's q / k / v input. For receiver head ``(l, h)`` the senders
  in layers below ``l`` add their write ``(z_clean - z_corrupted) @ W_O`` to the receiver's own copy
  of ``resid_pre[l]``; every other reader (other heads, the MLPs, later layers) still sees the
  corrupted run. So the receiver's q/k/v is what layer ``l`` computes from
  ``resid_pre[l] + delta_l``, taken for head ``h`` only. That activation is computed once per
  receiver layer, then every receiver head is one variant of ``engine.patch_runner``: many variants
  per forward, each starting at its own layer from the cached corrupted run.
- Senders -> logits directly: the summed write is added to the corrupted run's final residual
  stream only (before ``ln_final``), so no layer sees it. One ln_final + unembed, no forward.

With one sender the receivers equal ``get_act_patch_direct_path`` (tests/engine/test_path_patching).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import InputError
from engine.jobs import JobContext
from engine.patch_pairs import PromptPair, prepare_pairs
from engine.patch_runner import PatchRunner, Variant, chunked
from engine.patching import Metric

INPUTS = ("q", "k", "v")


@dataclass(frozen=True)
class PathPatchRequest:
    pairs: tuple[PromptPair, ...]
    senders: tuple[tuple[int, int], ...]  # (layer, head) of each sender head
    component: str = "q"  # receiver input: "q", "k" or "v"
    metric: str = "logit_diff_norm"
    prepend_bos: bool | None = None  # None: the model's default (engine.tokens.bos_policy)
    memory_budget_mb: int = 512
    max_tokens_per_chunk: int = 4096


@dataclass(frozen=True)
class PathPatchResult:
    senders: tuple[tuple[int, int], ...]
    component: str
    # [n_layers, receivers]; NaN where no sender is in an earlier layer. Receivers are query heads
    # for q, and key/value heads (receiver_axis "kv_head") for k and v of a grouped-query model:
    # the senders' write reaches the one k/v input a group of query heads shares.
    receivers: np.ndarray
    direct_to_logits: float
    clean_value: float
    corrupted_value: float
    metric: str
    seconds: float
    forwards: int = 0
    receiver_axis: str = "head"
    path: str = ""
    # (clean, corrupted) of the metric before normalising (logit differences for the normalised
    # metric): what the normalisation divides by, shown next to it.
    raw_baselines: tuple[float, float] = (float("nan"), float("nan"))

    @property
    def label(self) -> str:
        return " + ".join(f"L{sl}H{sh}" for sl, sh in self.senders)


def check_senders(senders, n_layers: int, n_heads: int) -> tuple[tuple[int, int], ...]:
    if not senders:
        raise InputError("No sender head is chosen.",
                         "Click a head cell of a head sweep (Ctrl+click adds more senders).")
    bad = [f"L{sl}H{sh}" for sl, sh in senders if not (0 <= sl < n_layers and 0 <= sh < n_heads)]
    if bad:
        raise InputError(f"Head {', '.join(bad)} does not exist in this model "
                         f"({n_layers} layers × {n_heads} heads).", "Pick another head.")
    return tuple(sorted(set((int(sl), int(sh)) for sl, sh in senders)))


@torch.inference_mode()
def run_path_patching(host, request: PathPatchRequest, ctx: JobContext) -> PathPatchResult:
    started = time.perf_counter()
    info = host.info
    n_layers = info.n_layers
    senders = check_senders(request.senders, n_layers, info.n_heads)
    if request.component not in INPUTS:
        raise InputError(f"Receiver input {request.component!r} is not q, k or v.", "")
    caps = host.caps
    if caps.head_dla:
        raise InputError("Path patching from sender heads is not defined on this architecture: "
                         + caps.head_dla, "Use activation patching of the heads' outputs (z) "
                         "instead.")
    caps.require(request.component, f"receivers' {request.component} input")
    ctx.progress(0.01, "Tokenising the prompt pairs…")
    pairs = prepare_pairs(host, request.pairs, request.prepend_bos)
    metric = Metric(request.metric, pairs)
    first = min(sl for sl, _ in senders)
    receiver_layers = list(range(first + 1, n_layers))
    acts = {layer: f"blocks.{layer}.attn.hook_{request.component}" for layer in receiver_layers}
    last = f"blocks.{n_layers - 1}.hook_resid_post"
    names = {f"blocks.{sl}.attn.hook_z" for sl, _ in senders} | set(acts.values()) | {last}
    ctx.progress(0.03, "Caching the clean and corrupted runs…")
    runner = PatchRunner(host, pairs, "denoise", names, metric, ctx)
    model = host.model

    def write(sl: int, sh: int) -> torch.Tensor:  # [batch, pos, d_model]
        z = f"blocks.{sl}.attn.hook_z"
        diff = runner.sources["source"][z][:, :, sh] - runner.base[z][:, :, sh]
        return diff @ model.blocks[sl].attn.W_O[sh]

    writes = {s: write(*s) for s in senders}
    total = sum(writes.values())
    rows = torch.arange(runner.n_pairs, device=total.device)
    final = (runner.base[last] + total)[rows, pairs.positions][:, None, :]
    direct = float(runner.metric(model.unembed(model.ln_final(final))[:, 0, :]).mean())

    # What each receiver layer computes from its own resid_pre plus the earlier senders' writes.
    path_acts = {}
    for i, layer in enumerate(receiver_layers):
        ctx.check_cancelled()
        ctx.progress(0.05 + 0.25 * i / max(1, len(receiver_layers)),
                     f"Receiver inputs of layer {layer}…")
        delta = sum(w for (sl, _), w in writes.items() if sl < layer)
        path_acts[acts[layer]] = _layer_input(model, runner.base_tokens, layer, delta, acts[layer])
    runner.sources["path"] = path_acts
    variants = []
    n_heads_in = {layer: runner.act_size(acts[layer], 1) for layer in receiver_layers}
    width = max(n_heads_in.values(), default=info.n_heads)
    for layer in receiver_layers:
        for head in range(n_heads_in[layer]):
            sel = (slice(None), head, slice(None))
            variants.append(Variant(layer * width + head, ((acts[layer], layer, sel, "path"),)))
    values = np.full(n_layers * width, np.nan, dtype=np.float32)
    chunk = runner.chunk_size(request.memory_budget_mb, request.max_tokens_per_chunk)
    done = 0
    for group in chunked(variants, chunk):
        out = runner.run(group)
        values[[v.key for v in group]] = out.float().cpu().numpy()
        done += len(group)
        ctx.progress(0.3 + 0.7 * done / len(variants), f"Patched {done}/{len(variants)} paths")
    clean_v, corr_v = runner.metric.baseline_values()
    axis = "kv_head" if width < info.n_heads else "head"
    return PathPatchResult(senders, request.component, values.reshape(n_layers, width), direct,
                           clean_v, corr_v, request.metric, time.perf_counter() - started,
                           runner.forwards + len(receiver_layers), axis,
                           f"receivers' inputs computed once per layer; {runner.path_summary()}",
                           (runner.metric.hi, runner.metric.lo))


def _layer_input(model, tokens, layer: int, delta, name: str) -> torch.Tensor:
    """``name`` (a q/k/v hook of ``layer``) when ``resid_pre[layer]`` gets ``delta`` added."""
    got = {}

    def add(resid, hook=None):
        return resid + delta

    def grab(act, hook=None):
        got["act"] = act.clone()
        raise _Stop

    try:
        model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", add),
                                                (name, grab)])
    except _Stop:
        pass
    if "act" not in got:
        raise InputError(f"This model has no {name} hook.", "Path patching needs q/k/v hooks.")
    return got["act"]


class _Stop(Exception):
    """Raised by the capture hook: nothing after the captured activation needs computing."""
