"""Patch plans: several patches/ablations applied together, and each alone, in one batched run.

An item names a component (embed, resid_pre/mid/post, attn_out, mlp_out, a head's z/q/k/v/pattern,
an MLP neuron), optional positions, and a mode:

- ``denoise``: the clean run's activation into the corrupted run;
- ``noise``: the corrupted run's activation into the clean run;
- ``zero`` / ``mean`` / ``resample``: ablations of the base run. ``mean`` is the mean over the
  reference batch (every clean and corrupted prompt of the pairs, and every position except for
  attention patterns); ``resample`` takes each pair's activation from the next pair's clean run.

The base run is the corrupted run when an item denoises, the clean run when one noises or the plan
only ablates; a plan that both denoises and noises has no single base and is refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.errors import InputError
from engine.jobs import JobContext
from engine.patch_pairs import PromptPair, prepare_pairs
from engine.patch_runner import PatchRunner, Variant
from engine.patching import Metric

MODES = ("denoise", "noise", "zero", "mean", "resample")
# component -> (hook template, layout of the activation after the batch axis)
COMPONENTS = {
    "embed": ("hook_embed", ("pos", "d")),
    "resid_pre": ("blocks.{}.hook_resid_pre", ("pos", "d")),
    "resid_mid": ("blocks.{}.hook_resid_mid", ("pos", "d")),
    "resid_post": ("blocks.{}.hook_resid_post", ("pos", "d")),
    "attn_out": ("blocks.{}.hook_attn_out", ("pos", "d")),
    "mlp_out": ("blocks.{}.hook_mlp_out", ("pos", "d")),
    "z": ("blocks.{}.attn.hook_z", ("pos", "head", "d")),
    "q": ("blocks.{}.attn.hook_q", ("pos", "head", "d")),
    "k": ("blocks.{}.attn.hook_k", ("pos", "head", "d")),
    "v": ("blocks.{}.attn.hook_v", ("pos", "head", "d")),
    "pattern": ("blocks.{}.attn.hook_pattern", ("head", "pos", "k")),
    "neuron": ("blocks.{}.mlp.hook_post", ("pos", "neuron")),
}
HEADED = ("z", "q", "k", "v", "pattern")


@dataclass(frozen=True)
class PlanItem:
    component: str
    layer: int = 0
    index: int = -1  # head for z/q/k/v/pattern, neuron for "neuron"; -1 otherwise
    positions: tuple[int, ...] = ()  # () = every position
    mode: str = "denoise"
    sae: str = ""  # the SAE folder of a "feature" item (engine.sae_patching)

    def label(self) -> str:
        if self.component == "feature":
            name = f"F{self.index} ({Path(self.sae).name}, L{self.layer})"
        elif self.component == "embed":
            name = "embed"
        elif self.component in HEADED:
            name = f"L{self.layer}H{self.index} {self.component}"
        elif self.component == "neuron":
            name = f"L{self.layer} neuron {self.index}"
        else:
            name = f"L{self.layer} {self.component}"
        pos = "" if not self.positions else " @" + ",".join(str(p) for p in self.positions)
        return f"{name}{pos} [{self.mode}]"


@dataclass(frozen=True)
class PlanRequest:
    pairs: tuple[PromptPair, ...]
    items: tuple[PlanItem, ...]
    metric: str = "logit_diff_norm"
    prepend_bos: bool | None = None  # None: the model's default (engine.tokens.bos_policy)


@dataclass(frozen=True)
class PlanResult:
    labels: tuple[str, ...]  # "all together", then one per item
    values: np.ndarray  # float32 [1 + n_items]: together, then each alone
    clean_value: float
    corrupted_value: float
    base: str  # "corrupted" or "clean"
    metric: str
    seconds: float
    path: str = ""
    raw_baselines: tuple[float, float] = (float("nan"), float("nan"))  # before normalising


def item_problem(item: PlanItem, n_layers: int, n_heads: int, d_mlp: int, n_kv: int = 0,
                 n_pos: int | None = None, caps=None) -> str:
    """Why ``item`` does not fit this model (and prompt), or ''. ``caps``: the model's
    engine.capabilities.Capabilities (components it lacks or cannot patch)."""
    if item.component == "feature":  # the SAE is checked when the plan runs
        if item.mode not in MODES:
            return f"unknown mode {item.mode!r}"
        if not 0 <= item.layer < n_layers:
            return f"layer {item.layer} does not exist (the model has {n_layers} layers)"
        if n_pos is not None and any(not 0 <= p < n_pos for p in item.positions):
            return f"position {max(item.positions)} is past the prompt's {n_pos} tokens"
        return ""
    if item.component not in COMPONENTS:
        return f"unknown component {item.component!r}"
    if caps is not None and item.component in caps.missing:
        return f"{item.component} cannot be patched on this model: {caps.missing[item.component]}"
    if item.mode not in MODES:
        return f"unknown mode {item.mode!r}"
    if item.component != "embed" and not 0 <= item.layer < n_layers:
        return f"layer {item.layer} does not exist (the model has {n_layers} layers)"
    if item.component in HEADED:
        kv = item.component in ("k", "v") and 0 < n_kv < n_heads
        limit = n_kv if kv else n_heads
        if not 0 <= item.index < limit:
            what = "key/value heads" if kv else "heads"
            return f"head {item.index} does not exist (the model has {limit} {what})"
    if item.component == "neuron" and not 0 <= item.index < d_mlp:
        return f"neuron {item.index} does not exist (the MLP has {d_mlp} neurons)"
    if n_pos is not None and any(not 0 <= p < n_pos for p in item.positions):
        return f"position {max(item.positions)} is past the prompt's {n_pos} tokens"
    return ""


def validate_plan(items, info, n_pos: int | None = None) -> list[str]:
    """One message per item that does not fit (``info``: engine.host.ModelInfo)."""
    out = []
    for i, item in enumerate(items):
        problem = item_problem(item, info.n_layers, info.n_heads, info.d_mlp,
                               info.n_key_value_heads, n_pos, getattr(info, "caps", None))
        if problem:
            out.append(f"Item {i + 1} ({item.label()}): {problem}.")
    return out


def _patch(item: PlanItem) -> tuple:
    template, layout = COMPONENTS[item.component]
    sel = []
    for dim in layout:
        if dim == "pos" and item.positions:
            sel.append(list(item.positions))
        elif dim in ("head", "neuron"):
            sel.append(item.index)
        else:
            sel.append(slice(None))
    layer = -1 if item.component == "embed" else item.layer
    source = "source" if item.mode in ("denoise", "noise") else item.mode
    return template.format(item.layer), layer, tuple(sel), source


@torch.inference_mode()
def run_plan(host, request: PlanRequest, ctx: JobContext) -> PlanResult:
    started = time.perf_counter()
    if not request.items:
        raise InputError("The patch plan is empty.",
                         "Drag components from the palette (or cells of a sweep) onto the plan.")
    if any(item.component == "feature" for item in request.items):
        from engine.sae_patching import run_feature_plan

        return run_feature_plan(host, request, ctx)
    pairs = prepare_pairs(host, request.pairs, request.prepend_bos)
    n_pos = int(pairs.clean.shape[-1])
    problems = validate_plan(request.items, host.info, n_pos)
    if problems:
        raise InputError(" ".join(problems), "Remove or edit these items.")
    modes = {item.mode for item in request.items}
    if {"denoise", "noise"} <= modes:
        raise InputError("The plan both denoises and noises, so there is no single run to patch.",
                         "Make every patched item denoise, or every one noise.")
    direction = "denoise" if "denoise" in modes else "noise"
    patches = [_patch(item) for item in request.items]
    names = {p[0] for p in patches}
    metric = Metric(request.metric, pairs)
    ctx.progress(0.1, "Caching the clean and corrupted runs…")
    runner = PatchRunner(host, pairs, direction, names, metric, ctx)
    extra = {}
    clean = runner.base if direction == "noise" else runner.sources["source"]
    if "zero" in modes:
        extra["zero"] = {n: torch.zeros_like(runner.base[n][:1]) for n in names}
    if "mean" in modes:
        extra["mean"] = {}
        for n in names:
            both = torch.cat([runner.base[n], runner.sources["source"][n]])
            dims = [0] if n.endswith("hook_pattern") else [0, 1]
            extra["mean"][n] = both.mean(dim=dims, keepdim=True)[:1]
    if "resample" in modes:
        if len(request.pairs) < 2:
            raise InputError("Resample ablation needs at least two pairs.",
                             "It takes each pair's activation from the next pair's clean prompt; "
                             "add a pair.")
        extra["resample"] = {n: torch.roll(clean[n], 1, dims=0) for n in names}
    runner.sources.update(extra)
    variants = [Variant(0, tuple(patches))]
    variants += [Variant(i + 1, (p,)) for i, p in enumerate(patches)]
    ctx.progress(0.5, f"Running {len(variants)} patched runs in one batch…")
    values = runner.run(variants).float().cpu().numpy()
    clean_v, corr_v = metric.baseline_values()
    ctx.progress(1.0, "done")
    return PlanResult(("all together", *[i.label() for i in request.items]),
                      values.astype(np.float32), clean_v, corr_v,
                      "corrupted" if direction == "denoise" else "clean", request.metric,
                      time.perf_counter() - started, runner.path_summary(),
                      (metric.hi, metric.lo))
