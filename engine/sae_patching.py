"""Patch plans with SAE features: a feature's activation patched between runs, error term kept.

A feature item (``PlanItem(component="feature", layer=L, index=i, sae=folder)``) sets feature i
of the SAE at its hook to its value in the source run (``denoise``: clean into corrupted;
``noise``: corrupted into clean), to 0 (``zero``), to its mean over the reference batch
(``mean``) or to the next pair's clean value (``resample``). The activation becomes
``x + (f_i' - f_i(x)) W_dec[i]``: the SAE's error term and every other feature stay as they are,
so only that feature changes. ``f_i(x)`` is read from the activation the variant actually has
there, so a feature item composes with upstream patches in "all together".

Plans with feature items run here with TransformerLens hooks on full forwards (variants stacked
on the batch axis, one forward for the whole plan); plans without them keep the faster
``engine.patch_runner`` path. The other item kinds behave exactly as in ``engine.patch_plan``.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from engine.errors import InputError
from engine.jobs import JobContext
from engine.patch_pairs import prepare_pairs
from engine.patching import Metric
from engine.sae_io import get_sae
from engine.sae_splice import decode_delta


def _feature_problem(item, loaded, n_pos: int) -> str:
    if not 0 <= item.index < loaded.cfg.d_sae:
        return f"feature {item.index} does not exist (the SAE has {loaded.cfg.d_sae})"
    if any(not 0 <= p < n_pos for p in item.positions):
        return f"position {max(item.positions)} is past the prompt's {n_pos} tokens"
    return ""


def run_feature_plan(host, request, ctx: JobContext):
    """``engine.patch_plan.run_plan`` for plans that hold feature items."""
    from engine.patch_plan import PlanResult, _patch, item_problem

    started = time.perf_counter()
    model = host.model
    info = host.info
    pairs = prepare_pairs(host, request.pairs, request.prepend_bos)
    n_pairs, n_pos = (int(s) for s in pairs.clean.shape)
    saes, problems = {}, []
    for i, item in enumerate(request.items):
        if item.component == "feature":
            if not item.sae:
                problem = "no SAE is named"
            else:
                if item.sae not in saes:
                    try:
                        saes[item.sae] = get_sae(host, item.sae)
                    except InputError as exc:
                        problems.append(f"Item {i + 1} ({item.label()}): {exc.message}")
                        continue
                problem = _feature_problem(item, saes[item.sae], n_pos)
        else:
            problem = item_problem(item, info.n_layers, info.n_heads, info.d_mlp,
                                   info.n_key_value_heads, n_pos, getattr(info, "caps", None))
        if problem:
            problems.append(f"Item {i + 1} ({item.label()}): {problem}.")
    if problems:
        raise InputError(" ".join(problems), "Remove or edit these items.")
    modes = {item.mode for item in request.items}
    if {"denoise", "noise"} <= modes:
        raise InputError("The plan both denoises and noises, so there is no single run to patch.",
                         "Make every patched item denoise, or every one noise.")
    direction = "denoise" if "denoise" in modes else "noise"
    base_toks, src_toks = ((pairs.corrupted, pairs.clean) if direction == "denoise"
                           else (pairs.clean, pairs.corrupted))
    hooks_of = {}
    for item in request.items:
        hooks_of[item] = (saes[item.sae].cfg.hook_name if item.component == "feature"
                          else _patch(item)[0])
    names = set(hooks_of.values())
    ctx.progress(0.1, "Caching the clean and corrupted runs…")
    src_logits, src_cache = model.run_with_cache(src_toks, names_filter=lambda n: n in names)
    base_logits, base_cache = model.run_with_cache(base_toks, names_filter=lambda n: n in names)
    ctx.check_cancelled()
    rows = torch.arange(n_pairs, device=base_toks.device)
    metric = Metric(request.metric, pairs)
    clean_logits, corr_logits = ((src_logits, base_logits) if direction == "denoise"
                                 else (base_logits, src_logits))
    metric.set_baselines(clean_logits[rows, pairs.positions], corr_logits[rows, pairs.positions])
    clean_cache = src_cache if direction == "denoise" else base_cache
    edits = [_edit(item, hooks_of[item], saes, src_cache, base_cache, clean_cache, n_pairs)
             for item in request.items]
    variants = [list(range(len(edits)))] + [[i] for i in range(len(edits))]
    n_var = len(variants)
    by_hook: dict[str, list[tuple[int, object]]] = {}
    for v, members in enumerate(variants):
        for i in members:
            by_hook.setdefault(hooks_of[request.items[i]], []).append((v, edits[i]))

    def make_hook(entries):
        def hook(act, hook=None):
            act = act.clone()
            for v, edit in entries:
                rows_v = slice(v * n_pairs, (v + 1) * n_pairs)
                act[rows_v] = edit(act[rows_v])
            return act

        return hook

    ctx.progress(0.5, f"Running {n_var} patched runs in one batch…")
    fwd = [(name, make_hook(entries)) for name, entries in by_hook.items()]
    with model.hooks(fwd_hooks=fwd):
        logits = model(base_toks.repeat(n_var, 1), return_type="logits")
    final = logits[torch.arange(n_var * n_pairs, device=logits.device),
                   pairs.positions.repeat(n_var)]
    values = metric(final).float().cpu().numpy()
    clean_v, corr_v = metric.baseline_values()
    ctx.progress(1.0, "done")
    return PlanResult(("all together", *[i.label() for i in request.items]),
                      values.astype(np.float32), clean_v, corr_v,
                      "corrupted" if direction == "denoise" else "clean", request.metric,
                      time.perf_counter() - started,
                      "full forwards with TransformerLens hooks (the plan has SAE features)")


def _edit(item, name, saes, src_cache, base_cache, clean_cache, n_pairs):
    """A function act[B, ...] -> patched act for one item (on one variant's rows)."""
    if item.component != "feature":
        from engine.patch_plan import _patch

        _name, _layer, sel, source = _patch(item)
        if source == "source":
            values = src_cache[name]
        elif source == "zero":
            values = torch.zeros_like(base_cache[name])
        elif source == "mean":
            both = torch.cat([base_cache[name], src_cache[name]])
            dims = [0] if name.endswith("hook_pattern") else [0, 1]
            values = both.mean(dim=dims, keepdim=True).expand_as(base_cache[name])
        else:
            if n_pairs < 2:
                raise InputError("Resample ablation needs at least two pairs.",
                                 "Add a pair.")
            values = torch.roll(clean_cache[name], 1, dims=0)
        index = (slice(None), *sel)

        def patch(act):
            act[index] = values[index].to(act.dtype)
            return act

        return patch
    sae = saes[item.sae].sae
    i = item.index

    def feature_of(cache):
        return sae.encode(sae.flat(cache[name]))[..., i]  # [B, pos]

    if item.mode in ("denoise", "noise"):
        want = feature_of(src_cache)
    elif item.mode == "zero":
        want = torch.zeros_like(feature_of(base_cache))
    elif item.mode == "mean":
        both = torch.cat([feature_of(base_cache), feature_of(src_cache)])
        want = both.mean().expand_as(feature_of(base_cache))
    else:
        if n_pairs < 2:
            raise InputError("Resample ablation needs at least two pairs.", "Add a pair.")
        want = torch.roll(feature_of(clean_cache), 1, dims=0)
    positions = list(item.positions)

    def patch(act):
        f, state = sae.encode_with_state(sae.flat(act))
        df = torch.zeros_like(f)
        if positions:
            df[:, positions, i] = want[:, positions] - f[:, positions, i]
        else:
            df[..., i] = want - f[..., i]
        return act + sae.unflat(decode_delta(sae, df, state), act)

    return patch
