"""Activation patching: prompt pairs, the metric, and batched exact sweeps.

A sweep patches one component at a time (e.g. head 3.2's output at every position) from a
*source* run into a *base* run and measures the metric. TransformerLens's ``patching.get_act_patch_*``
run one full forward per cell; here many cells run in one forward (the patched variants stacked on
the batch axis, each with its own patch, see ``engine.patch_runner``), and every forward starts at
the earliest patched layer from the cached residual stream. ``tests/engine/test_patching.py``
proves the numbers equal TransformerLens's within 1e-4.

Direction: *denoise* patches clean activations into the corrupted run (TransformerLens's
convention); *noise* patches corrupted activations into the clean run. The normalised metric is
``(LD - LD_corrupted) / (LD_clean - LD_corrupted)``: corrupted = 0, clean = 1, either way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.errors import InputError
from engine.jobs import JobContext
from engine.patch_pairs import PairBatch, PromptPair, align_message, prepare_pairs  # noqa: F401
from engine.patch_runner import PatchRunner, Variant, chunked

METRICS = {
    "logit_diff_norm": "Logit difference, normalised (corrupted = 0, clean = 1)",
    "logit_diff": "Logit difference (answer − counterfactual)",
    "prob": "Probability of the answer",
    "loss": "Loss on the answer (−log p)",
}

# kind -> (hook name template, axes of the result, layout of the activation after the batch axis)
SWEEPS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "resid_pre": ("blocks.{}.hook_resid_pre", ("layer", "pos"), ("pos", "d")),
    "resid_mid": ("blocks.{}.hook_resid_mid", ("layer", "pos"), ("pos", "d")),
    "attn_out": ("blocks.{}.hook_attn_out", ("layer", "pos"), ("pos", "d")),
    "mlp_out": ("blocks.{}.hook_mlp_out", ("layer", "pos"), ("pos", "d")),
    "head_out": ("blocks.{}.attn.hook_z", ("layer", "head"), ("pos", "head", "d")),
    "head_out_by_pos": ("blocks.{}.attn.hook_z", ("layer", "pos", "head"), ("pos", "head", "d")),
    "head_q": ("blocks.{}.attn.hook_q", ("layer", "head"), ("pos", "head", "d")),
    "head_k": ("blocks.{}.attn.hook_k", ("layer", "head"), ("pos", "head", "d")),
    "head_v": ("blocks.{}.attn.hook_v", ("layer", "head"), ("pos", "head", "d")),
    "head_pattern": ("blocks.{}.attn.hook_pattern", ("layer", "head"), ("head", "pos", "k")),
    "head_q_by_pos": ("blocks.{}.attn.hook_q", ("layer", "pos", "head"), ("pos", "head", "d")),
    "head_k_by_pos": ("blocks.{}.attn.hook_k", ("layer", "pos", "head"), ("pos", "head", "d")),
    "head_v_by_pos": ("blocks.{}.attn.hook_v", ("layer", "pos", "head"), ("pos", "head", "d")),
    # a head's pattern row at one destination position (all source positions)
    "head_pattern_by_pos": ("blocks.{}.attn.hook_pattern", ("layer", "head", "pos"),
                            ("head", "pos", "k")),
}
# Several sweeps sharing one pair of cached runs; the result gets a leading "component" axis
# (TransformerLens's get_act_patch_block_every / get_act_patch_attn_head_all_pos_every).
COMPOSITE = {
    "block": ("resid_pre", "attn_out", "mlp_out"),
    "head_every": ("head_out", "head_q", "head_k", "head_v", "head_pattern"),
}
# The component (engine.capabilities) each sweep patches.
SWEEP_COMPONENT = {
    "resid_pre": "resid_pre", "resid_mid": "resid_mid", "attn_out": "attn_out",
    "mlp_out": "mlp_out", "head_out": "z", "head_out_by_pos": "z", "head_q": "q", "head_k": "k",
    "head_v": "v", "head_pattern": "pattern", "head_q_by_pos": "q", "head_k_by_pos": "k",
    "head_v_by_pos": "v", "head_pattern_by_pos": "pattern",
}
SWEEP_LABELS = {
    "block": "Block sweep: resid_pre, attn_out and mlp_out by layer × position",
    "resid_pre": "Residual stream (resid_pre) by layer × position",
    "resid_mid": "Residual stream (resid_mid) by layer × position",
    "attn_out": "Attention output by layer × position",
    "mlp_out": "MLP output by layer × position",
    "head_out": "Head outputs (z) by layer × head, all positions",
    "head_out_by_pos": "Head outputs (z) by layer × head × position",
    "head_q": "Head queries by layer × head",
    "head_k": "Head keys by layer × head",
    "head_v": "Head values by layer × head",
    "head_pattern": "Head attention patterns by layer × head",
    "head_every": "Head out, q, k, v and pattern by layer × head",
    "head_q_by_pos": "Head queries by layer × head × position",
    "head_k_by_pos": "Head keys by layer × head × position",
    "head_v_by_pos": "Head values by layer × head × position",
    "head_pattern_by_pos": "Head attention patterns by layer × head × destination position",
}


@dataclass(frozen=True)
class SweepRequest:
    pairs: tuple[PromptPair, ...]
    kind: str = "head_out"
    metric: str = "logit_diff_norm"
    direction: str = "denoise"  # or "noise"
    prepend_bos: bool | None = None  # None: the model's default (engine.tokens.bos_policy)
    memory_budget_mb: int = 512
    max_tokens_per_chunk: int = 4096
    start_at_layer: bool = True  # False: every variant runs the whole model (for benchmarks)
    only: tuple[int, ...] = ()  # flat cell indices to compute (e.g. verify top-k); () = all


@dataclass(frozen=True)
class SweepResult:
    kind: str
    metric: str
    direction: str
    axes: tuple[str, ...]
    values: np.ndarray  # float32, NaN where not computed yet
    done: int
    total: int
    clean_value: float
    corrupted_value: float
    clean_tokens: tuple[str, ...]
    corrupted_tokens: tuple[str, ...]
    seconds: float = 0.0
    chunk_size: int = 0
    complete: bool = False
    labels: dict = field(default_factory=dict)
    # How the cells were computed (PatchRunner.path_summary), for the panel's status line.
    path: str = ""

    def part_shape(self, part: str) -> tuple[int, ...]:
        """The real shape of one component of a composite sweep (k and v of a grouped-query
        model have fewer heads than the others; their padding is NaN)."""
        return tuple(self.labels.get("part_shapes", {}).get(part, self.values.shape[-2:]))


class Metric:
    """Per-example scores from the logits at the target positions, averaged over the pairs."""

    def __init__(self, name: str, pairs: PairBatch) -> None:
        if name not in METRICS:
            raise InputError(f"Unknown metric {name!r}.", "Use one of " + ", ".join(METRICS))
        self.name = name
        self.pairs = pairs
        self.lo, self.hi = 0.0, 1.0

    def per_example(self, final_logits: torch.Tensor) -> torch.Tensor:
        """final_logits [N, vocab] with N = variants × pairs (pair index fastest) -> [N]."""
        b = len(self.pairs.positions)
        ans = self.pairs.answer.repeat(final_logits.shape[0] // b)
        logits = final_logits.float()
        if self.name in ("prob", "loss"):
            lp = torch.log_softmax(logits, dim=-1).gather(-1, ans[:, None])[:, 0]
            return lp.exp() if self.name == "prob" else -lp
        value = logits.gather(-1, ans[:, None])[:, 0]
        if self.pairs.counterfactual is not None:
            cf = self.pairs.counterfactual.repeat(final_logits.shape[0] // b)
            value = value - logits.gather(-1, cf[:, None])[:, 0]
        return value

    def raw(self, final_logits: torch.Tensor) -> torch.Tensor:
        """[V * B, vocab] -> the metric averaged over pairs, [V], before normalising."""
        b = len(self.pairs.positions)
        return self.per_example(final_logits).reshape(-1, b).mean(dim=1)

    def set_baselines(self, clean_final: torch.Tensor, corrupted_final: torch.Tensor) -> None:
        self.hi = float(self.raw(clean_final)[0])
        self.lo = float(self.raw(corrupted_final)[0])
        if self.name == "logit_diff_norm" and abs(self.hi - self.lo) < 1e-6:
            raise InputError("The clean and corrupted prompts give the same logit difference "
                             f"({self.hi:.4g}), so the normalised metric is undefined.",
                             "Pick prompts that change the answer, or use the raw logit "
                             "difference metric.")

    def __call__(self, final_logits: torch.Tensor) -> torch.Tensor:
        raw = self.raw(final_logits)
        if self.name == "logit_diff_norm":
            return (raw - self.lo) / (self.hi - self.lo)
        return raw

    def baseline_values(self) -> tuple[float, float]:
        """(clean, corrupted) in the metric's units."""
        if self.name == "logit_diff_norm":
            return 1.0, 0.0
        return self.hi, self.lo

    def full_logits_fn(self):
        """The same metric on full [batch, pos, vocab] logits, for TransformerLens's functions."""
        positions = self.pairs.positions

        def fn(logits: torch.Tensor) -> torch.Tensor:
            at = logits[torch.arange(logits.shape[0], device=logits.device), positions]
            return self(at)[0]

        return fn


def sweep_axes(kind: str, n_heads: int, n_kv_heads: int) -> tuple[str, ...]:
    """The result axes of one sweep; a key/value sweep of a grouped-query model runs over key/value
    heads, named ``kv_head``."""
    axes = SWEEPS[kind][1]
    if SWEEP_COMPONENT[kind] in ("k", "v") and 0 < n_kv_heads < n_heads:
        axes = tuple("kv_head" if a == "head" else a for a in axes)
    return axes


def sweep_variants(runner: PatchRunner, kind: str) -> tuple[list[Variant], tuple[int, ...]]:
    template, axes, layout = SWEEPS[kind]
    sizes = {"layer": runner.n_layers, "pos": runner.n_pos,
             "head": runner.act_size(template.format(0), layout.index("head"))
             if "head" in layout else 0}
    shape = tuple(sizes[a] for a in axes)
    variants = []
    for flat, idx in enumerate(np.ndindex(*shape)):
        if flat % 4096 == 0:  # a head x position sweep of a long prompt has 100k+ variants
            runner.ctx.check_cancelled()
        where = dict(zip(axes, idx, strict=True))
        sel = tuple(where.get(dim, slice(None)) if dim in ("pos", "head") else slice(None)
                    for dim in layout)
        variants.append(Variant(flat, ((template.format(where["layer"]), where["layer"], sel),)))
    return variants, shape


def available_sweeps(caps) -> dict[str, str]:
    """Every sweep kind -> "" if this model can run it, else why not (for tooltips)."""
    out = {}
    for kind in (*SWEEPS, *COMPOSITE):
        missing = [caps.missing[SWEEP_COMPONENT[p]] for p in _parts(kind)
                   if SWEEP_COMPONENT[p] in caps.missing]
        out[kind] = missing[0] if missing else ""
    return out


def _parts(kind: str) -> tuple[str, ...]:
    if kind in COMPOSITE:
        return COMPOSITE[kind]
    if kind not in SWEEPS:
        raise InputError(f"Unknown sweep {kind!r}.",
                         "Use one of " + ", ".join([*SWEEPS, *COMPOSITE]))
    return (kind,)


def _check_available(host, parts: tuple[str, ...], kind: str) -> None:
    caps = host.caps
    for part in parts:
        caps.require(SWEEP_COMPONENT[part], SWEEP_LABELS.get(part, part)
                     if len(parts) == 1 else f"{SWEEP_LABELS.get(kind, kind)} (its {part} part)")


def _runner(host, request: SweepRequest, pairs, metric, names: set[str], ctx) -> PatchRunner:
    """The base and source runs' caches, reused by the next sweep on the same pairs (one entry
    per host): a second sweep of another kind then costs no caching forwards."""
    key = (request.pairs, request.prepend_bos, request.direction, request.metric,
           request.start_at_layer)
    memo = host.__dict__.get("_patching_runner")
    if memo is not None and memo[0] == key and names <= memo[1].names:
        memo[1].ctx = ctx
        return memo[1]
    ctx.progress(0.03, "Caching the clean and corrupted runs…")
    host.__dict__.pop("_patching_runner", None)  # free the old caches first
    runner = PatchRunner(host, pairs, request.direction, names, metric, ctx,
                         start_at_layer=request.start_at_layer)
    host.__dict__["_patching_runner"] = (key, runner)
    return runner


@torch.inference_mode()
def run_sweep(host, request: SweepRequest, ctx: JobContext) -> SweepResult:
    parts = _parts(request.kind)
    _check_available(host, parts, request.kind)
    started = time.perf_counter()
    ctx.progress(0.01, "Tokenising the prompt pairs…")
    pairs = prepare_pairs(host, request.pairs, request.prepend_bos)
    metric = Metric(request.metric, pairs)
    names = {SWEEPS[part][0].format(layer) for part in parts for layer in range(host.info.n_layers)}
    if pairs.clean.numel() <= 256:  # short prompts: cache what the other sweeps need too
        names |= {SWEEPS[part][0].format(layer) for part in SWEEPS
                  if host.caps.has(SWEEP_COMPONENT[part]) and SWEEP_COMPONENT[part] != "pattern"
                  for layer in range(host.info.n_layers)}
    runner = _runner(host, request, pairs, metric, names, ctx)
    metric = runner.metric
    # Each part keeps its own shape (a grouped-query model's k and v have fewer heads); in a
    # composite the parts share one array padded to the widest, NaN where a part has no cell.
    part_variants = {part: sweep_variants(runner, part) for part in parts}
    shapes = {part: shp for part, (_v, shp) in part_variants.items()}
    full = tuple(max(dims) for dims in zip(*shapes.values(), strict=True))
    shape = ((len(parts),) if len(parts) > 1 else ()) + full
    variants = []
    for c, part in enumerate(parts):
        pv, pshape = part_variants[part]
        idx = np.unravel_index(np.arange(len(pv)), pshape)  # each variant's cell, in order
        keys = np.ravel_multi_index(((np.full(len(pv), c),) if len(parts) > 1 else ()) + idx,
                                    shape)
        variants += [Variant(key, v.patches) for key, v in zip(keys.tolist(), pv, strict=True)]
        ctx.check_cancelled()
    if request.only:
        wanted = set(request.only)
        variants = [v for v in variants if v.key in wanted]
    info = host.info
    axes = (("component",) if len(parts) > 1 else ()) + sweep_axes(
        parts[0], info.n_heads, info.n_key_value_heads)
    labels = {"components": parts, "part_shapes": shapes,
              "part_axes": {p: sweep_axes(p, info.n_heads, info.n_key_value_heads)
                            for p in parts},
              "raw_baselines": (metric.hi, metric.lo)}  # before normalising, for the panel
    if info.is_gqa:
        group = info.n_heads // info.n_key_value_heads
        labels["kv_groups"] = tuple(tuple(range(g * group, (g + 1) * group))
                                    for g in range(info.n_key_value_heads))
    values = np.full(int(np.prod(shape)), np.nan, dtype=np.float32)
    chunk = runner.chunk_size(request.memory_budget_mb, request.max_tokens_per_chunk,
                              patterns=any(SWEEP_COMPONENT[p] == "pattern" for p in parts))
    clean_v, corr_v = metric.baseline_values()

    def result(done: int, complete: bool) -> SweepResult:
        return SweepResult(request.kind, request.metric, request.direction, axes,
                           values.reshape(shape).copy(), done, len(variants), clean_v, corr_v,
                           tuple(pairs.clean_str[0]), tuple(pairs.corrupted_str[0]),
                           time.perf_counter() - started, chunk, complete,
                           {**labels, "paths": dict(runner.paths)}, runner.path_summary())

    runner.paths.clear()
    done, last_partial = 0, time.perf_counter()
    for group in chunked(runner.in_run_order(variants), chunk):
        ctx.check_cancelled()
        out = runner.run(group)
        values[[v.key for v in group]] = out.cpu().numpy()
        done += len(group)
        ctx.progress(0.05 + 0.95 * done / len(variants), f"Patched {done}/{len(variants)}")
        if time.perf_counter() - last_partial > 0.25 and done < len(variants):
            ctx.partial(result(done, False))
            last_partial = time.perf_counter()
    return result(done, True)
