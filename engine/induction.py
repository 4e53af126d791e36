"""Induction-head scanner: score every head on repeated random tokens and on the user's prompt.

One batched forward pass (``run_with_cache`` with a ``names_filter`` that keeps only the attention
patterns) runs B sequences ``BOS + r + r`` (r: T random tokens) together with the prompt, right-padded
to one length (a causal model's outputs at a position never depend on later positions, so padding
changes nothing). From that one cache every head gets:

- the induction score: mean attention from each token of the second copy to the token after its
  earlier copy (the ``q - T + 1`` stripe; ARENA's repeated-random-tokens test, restricted to the
  queries that have an earlier copy);
- previous-token, duplicate-token, induction (TransformerLens's ``head_detector`` patterns),
  current-token and first-token (BOS) scores, with detect_head's exact arithmetic
  (see ``engine.head_scores``), on the repeated sequences and on the prompt;
- a custom pattern (formula or painted) scored the same way;
- the per-position loss of the repeated sequence (first copy vs second copy).

``run_induction_ablation`` is the causal check: zero- or mean-ablate a set of heads on ``hook_z``
and compare the repeated-half loss with random equal-size control sets.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.errors import InputError, is_out_of_memory
from engine.head_scores import (
    DETECTOR_KINDS,
    ERROR_MEASURES,
    best_possible_score,
    check_painted,
    compile_formula,
    detection_pattern,
    detector_scores,
    pattern_rows,
    stripe_scores,
)
from engine.jobs import Cancelled, JobContext, cancel_points
from engine.tokens import bos_policy, str_tokens, tokenize

MAX_BATCH = 4096
PATTERN_FILTER_SUFFIX = "attn.hook_pattern"


@dataclass(frozen=True)
class CustomPattern:
    """A user-defined detection pattern: a formula over token ids, or a painted matrix."""

    formula: str = ""
    painted: tuple[tuple[float, ...], ...] = ()
    target: str = "prompt"  # "prompt" or "repeated"
    label: str = "custom"


@dataclass(frozen=True)
class InductionRequest:
    seq_len: int = 50  # T: length of the random segment r (the sequence is BOS + r + r)
    batch: int = 10
    seed: int = 0
    token_pool: str = "all"  # "all" ordinary tokens (ARENA), or "words" (' word' tokens: readable)
    prompt: str = ""  # empty: no prompt scores
    truncate: bool = False
    exclude_bos: bool = False
    exclude_current_token: bool = False
    error_measure: str = "mul"
    custom: CustomPattern | None = None
    max_rows_per_pass: int = 0  # 0: decided from free memory
    prepend_bos: bool | None = None  # None: the model's default (engine.tokens.bos_policy)


@dataclass(frozen=True)
class InductionResult:
    n_layers: int
    n_heads: int
    seq_len: int
    batch: int
    seed: int
    has_bos: bool
    token_pool: str
    rep_tokens: np.ndarray  # [batch, 2T(+1)] int64
    rep_str_tokens: tuple[str, ...]  # of the first sequence
    repeated: dict[str, np.ndarray]  # score name -> [n_layers, n_heads] float32
    prompt_scores: dict[str, np.ndarray]  # same names (no stripe); empty without a prompt
    prompt_str_tokens: tuple[str, ...]
    prompt_token_ids: np.ndarray
    loss_per_position: np.ndarray  # [2T(+1)-1] mean over the batch; index p predicts token p+1
    loss_std: np.ndarray
    first_half_loss: float
    second_half_loss: float
    custom_scores: np.ndarray | None = None  # [n_layers, n_heads]
    custom_pattern: np.ndarray | None = None  # [n, n] for the first sequence of the target
    custom_target: str = ""
    custom_label: str = ""
    error_measure: str = "mul"
    exclude_bos: bool = False
    exclude_current_token: bool = False
    n_forward_passes: int = 1
    seconds: float = 0.0
    notes: tuple[str, ...] = ()
    # Per prompt score: what a perfect head would score on this prompt, and how many query
    # positions the pattern has cells in (few repeated tokens: a low ceiling).
    prompt_ceilings: dict[str, float] = field(default_factory=dict)
    prompt_pattern_rows: dict[str, int] = field(default_factory=dict)

    @property
    def first_half_slice(self) -> slice:
        return half_slices(self.seq_len, self.has_bos)[0]

    @property
    def second_half_slice(self) -> slice:
        return half_slices(self.seq_len, self.has_bos)[1]


@dataclass(frozen=True)
class AblationRequest:
    heads: tuple[tuple[int, int], ...]
    mode: str = "zero"  # "zero" or "mean"
    seq_len: int = 50
    batch: int = 10
    seed: int = 0
    token_pool: str = "all"
    control_sets: int = 3
    control_seed: int = 1
    max_rows_per_pass: int = 0
    prepend_bos: bool | None = None


@dataclass(frozen=True)
class AblationResult:
    heads: tuple[tuple[int, int], ...]
    mode: str
    control_heads: tuple[tuple[tuple[int, int], ...], ...]
    loss_clean: np.ndarray  # [positions] mean over the batch
    loss_ablated: np.ndarray
    loss_control: np.ndarray  # [control_sets, positions]
    clean_halves: tuple[float, float]  # (first copy, second copy) mean loss
    ablated_halves: tuple[float, float]
    control_halves: np.ndarray  # [control_sets, 2]
    seq_len: int
    has_bos: bool
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ablated_rise(self) -> float:
        return self.ablated_halves[1] - self.clean_halves[1]

    @property
    def control_rise(self) -> float:
        return float(self.control_halves[:, 1].mean() - self.clean_halves[1]) \
            if len(self.control_halves) else float("nan")


# -- shared helpers ------------------------------------------------------------------------------
def half_slices(seq_len: int, has_bos: bool) -> tuple[slice, slice]:
    """Loss indices (p predicts token p+1) whose target is in the first / the second copy."""
    s = 1 if has_bos else 0
    first = slice(max(0, s - 1), s + seq_len - 1)
    second = slice(s + seq_len - 1, s + 2 * seq_len - 1)
    return first, second


def _bos_id(host, prepend_bos: bool | None = None) -> int | None:
    if not bos_policy(host, prepend_bos):
        return None
    bos = getattr(host.tokenizer, "bos_token_id", None)
    return int(bos) if bos is not None else None


def check_lengths(host, seq_len: int, batch: int, prepend_bos: bool | None = None) -> None:
    """Clear messages for lengths the model cannot take."""
    n_ctx = int(host.info.n_ctx)
    extra = 1 if _bos_id(host, prepend_bos) is not None else 0
    longest = (n_ctx - extra) // 2
    if seq_len < 2:
        raise InputError(f"The repeated segment must have at least 2 tokens (got {seq_len}).",
                         "Induction needs a token, its successor, and a later copy of the token.")
    if longest < 2:
        raise InputError(f"The model's context ({n_ctx} tokens) is too small for the repeated-"
                         "tokens test.", "It needs room for BOS plus two copies of 2+ tokens.")
    if 2 * seq_len + extra > n_ctx:
        raise InputError(
            f"A repeated sequence of {seq_len} tokens is {2 * seq_len + extra} tokens long"
            f"{' with BOS' if extra else ''}, beyond this model's context of {n_ctx} tokens.",
            f"Use a length of at most {longest} for this model.")
    if batch < 1:
        raise InputError("The batch must hold at least one sequence.", "Set the batch to 1 or more.")
    if batch > MAX_BATCH:
        raise InputError(f"A batch of {batch} sequences is more than this scanner runs "
                         f"({MAX_BATCH}).", "Use a smaller batch; 10–100 sequences give stable "
                         "scores.")


def token_pool(host, pool: str = "all") -> torch.Tensor:
    """Ids random tokens are drawn from: every ordinary (non-special) token, or only the tokens
    that decode to a space and letters (``"words"``), which read well and re-tokenise as themselves.
    """
    if pool not in ("all", "words"):
        raise InputError(f"Unknown token pool {pool!r}.", "Use 'all' or 'words'.")
    tok = host.tokenizer
    cached = host.__dict__.setdefault("_induction_token_pools", {})
    if pool in cached:
        return cached[pool]
    n_vocab = int(host.model.cfg.d_vocab)
    if tok is not None:
        n_vocab = min(n_vocab, len(tok))
    special = set(getattr(tok, "all_special_ids", []) or [])
    ids = [i for i in range(n_vocab) if i not in special]
    if pool == "words" and tok is not None:
        texts = tok.batch_decode([[i] for i in ids])
        ids = [i for i, t in zip(ids, texts, strict=True)
               if len(t) > 1 and t[0] == " " and t[1:].isalpha()]
        if len(ids) < 2:
            raise InputError("This tokenizer has too few single-word tokens for the 'words' pool.",
                             "Use the 'all' pool.")
    if len(ids) < 2:
        raise InputError("The model's vocabulary is too small for random tokens.",
                         "The repeated-tokens test needs at least 2 ordinary tokens.")
    cached[pool] = torch.tensor(ids, dtype=torch.int64)
    return cached[pool]


def repeated_tokens(host, seq_len: int, batch: int, seed: int, pool: str = "all",
                    prepend_bos: bool | None = None) -> torch.Tensor:
    """[batch, (1 +) 2T] int64: BOS + r + r with r uniform over the token pool, seeded."""
    allowed = token_pool(host, pool)
    gen = torch.Generator().manual_seed(int(seed))
    r = allowed[torch.randint(0, allowed.numel(), (batch, seq_len), generator=gen)]
    rep = torch.cat([r, r], dim=1)
    bos = _bos_id(host, prepend_bos)
    if bos is not None:
        rep = torch.cat([torch.full((batch, 1), bos, dtype=torch.int64), rep], dim=1)
    return rep


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        avail = 4 * 2**30
    return int(min(avail * 0.25, 2 * 2**30))


# The work between two cancel checks on a CPU: about 0.3 s at 100 GFLOP/s.
CANCEL_FLOP = 3e10


def rows_per_pass(host, length: int, requested: int = 0, for_cancel: bool = True) -> int:
    """How many sequences of ``length`` fit in one pass: cached patterns + logits + activations."""
    if requested > 0:
        return requested
    cfg = host.model.cfg
    elt = 4
    per_row = (cfg.n_layers * cfg.n_heads * length * length * elt  # cached patterns
               + cfg.n_heads * length * length * elt * 3  # one layer's scoring temporaries
               + 6 * length * length * elt  # detection patterns
               + length * cfg.d_vocab * elt * 3  # logits, log-softmax
               + cfg.n_layers * length * max(cfg.d_model, 1) * elt * 8)  # transient activations
    rows = max(1, _available_bytes(host.device) // max(per_row, 1))
    if host.device.type == "cpu" and for_cancel:
        # Cancel lands as each block starts and after the unembedding (the worker's cancel
        # points); keep the longest of those stretches in one pass near CANCEL_FLOP.
        d, d_mlp = int(cfg.d_model), int(getattr(cfg, "d_mlp", 0) or 4 * cfg.d_model)
        per_token = max(2 * d * int(cfg.d_vocab), 2 * (4 * d * d + 3 * d * d_mlp) + 4 * length * d)
        rows = min(rows, max(1, int(CANCEL_FLOP // (length * per_token))))
    return rows


def _losses(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    lp = torch.log_softmax(logits.float(), dim=-1)
    return -lp[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]


# -- the scan ------------------------------------------------------------------------------------
@torch.inference_mode()
def run_induction_scan(host, request: InductionRequest, ctx: JobContext) -> InductionResult:
    started = time.perf_counter()
    T, B = int(request.seq_len), int(request.batch)
    check_lengths(host, T, B, request.prepend_bos)
    if request.error_measure not in ERROR_MEASURES:
        raise InputError(f"Unknown error measure {request.error_measure!r}.", "Use mul or abs.")
    cfg = host.model.cfg
    n_layers, n_heads = int(cfg.n_layers), int(cfg.n_heads)
    device = host.device
    rep = repeated_tokens(host, T, B, request.seed, request.token_pool,
                          request.prepend_bos).to(device)
    has_bos = _bos_id(host, request.prepend_bos) is not None
    start = 1 if has_bos else 0
    notes: list[str] = []
    if n_layers < 2:
        notes.append("A one-layer model has no earlier layer to compose with, so it cannot form "
                     "real induction heads.")

    prompt_ids = None
    if request.prompt and request.prompt.strip():
        prompt_ids = tokenize(host, request.prompt, request.prepend_bos, request.truncate)[0]
        if prompt_ids.numel() < 2:
            notes.append("The prompt has a single token: no prompt scores.")
            prompt_ids = None

    custom = request.custom
    custom_fn = None
    painted = None
    if custom is not None:
        if custom.target not in ("prompt", "repeated"):
            raise InputError(f"Unknown custom-pattern target {custom.target!r}.",
                             "Scan against the prompt or the repeated tokens.")
        if custom.target == "prompt" and prompt_ids is None:
            raise InputError("The custom pattern targets the prompt, but there is no prompt.",
                             "Run a prompt first, or scan the pattern on the repeated tokens.")
        n_target = int(rep.shape[1] if custom.target == "repeated" else prompt_ids.numel())
        if custom.painted:
            painted = torch.from_numpy(check_painted(custom.painted, n_target))
        else:
            custom_fn = compile_formula(custom.formula)

    length = max(int(rep.shape[1]), int(prompt_ids.numel()) if prompt_ids is not None else 0)
    rows = B + (1 if prompt_ids is not None else 0)
    per_pass = max(1, min(rows, rows_per_pass(host, length, request.max_rows_per_pass)))
    n_passes = -(-rows // per_pass)
    if n_passes > 1 and per_pass < rows_per_pass(host, length, request.max_rows_per_pass,
                                                 for_cancel=False):
        notes.append(f"Ran in {n_passes} passes of up to {per_pass} sequences, so that Cancel "
                     "stops it within a second.")
    elif n_passes > 1:
        notes.append(f"The batch did not fit in memory in one pass: it ran in {n_passes} passes of "
                     f"up to {per_pass} sequences.")
    pad = _bos_id(host, request.prepend_bos) or 0
    all_rows = torch.full((rows, length), pad, dtype=torch.int64, device=device)
    all_rows[:B, : rep.shape[1]] = rep
    if prompt_ids is not None:
        all_rows[B, : prompt_ids.numel()] = prompt_ids  # last row

    kinds = DETECTOR_KINDS
    opts = dict(exclude_bos=request.exclude_bos, exclude_current_token=request.exclude_current_token,
                error_measure=request.error_measure)
    rep_sum = {k: torch.zeros(n_layers, n_heads, dtype=torch.float64) for k in
               ("induction_stripe", *kinds)}
    prompt_scores: dict[str, torch.Tensor] = {}
    custom_sum = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    losses: list[torch.Tensor] = []
    L_rep = int(rep.shape[1])
    custom_on_rep = custom is not None and custom.target == "repeated"
    custom_pattern = None

    def rep_custom(rows_tokens: torch.Tensor) -> torch.Tensor:
        if painted is not None:
            return painted[None].expand(rows_tokens.shape[0], L_rep, L_rep).to(device)
        return torch.from_numpy(np.stack([custom_fn(r) for r in rows_tokens.cpu().numpy()])
                                ).to(device)

    n_prompt = int(prompt_ids.numel()) if prompt_ids is not None else 0
    prompt_patterns = {}
    custom_pat_prompt = None
    if prompt_ids is not None:
        prompt_patterns = {k: detection_pattern(prompt_ids[None], k).to(device) for k in kinds}
        prompt_scores = {k: torch.zeros(n_layers, n_heads, dtype=torch.float64) for k in kinds}
        if custom is not None and custom.target == "prompt":
            custom_pat_prompt = (painted if painted is not None else torch.from_numpy(
                custom_fn(prompt_ids.cpu().numpy())))[None].to(device)
    ctx.progress(0.05, f"Running {rows} sequences of {length} tokens…")
    for i in range(n_passes):
        ctx.check_cancelled()
        lo, hi = i * per_pass, min(rows, (i + 1) * per_pass)
        try:
            with cancel_points(host.model, ctx):  # a pass can take seconds: check every layer
                logits, cache = host.model.run_with_cache(
                    all_rows[lo:hi],
                    names_filter=lambda name: name.endswith(PATTERN_FILTER_SUFFIX))
        except Cancelled:
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                raise InputError(
                    f"Out of memory running {hi - lo} sequences of {length} tokens at once.",
                    "Lower the batch or the sequence length.") from exc
            raise
        r_hi = min(hi, B)  # repeated rows in this pass: lo..r_hi
        has_prompt_row = prompt_ids is not None and lo <= B < hi
        custom_pat_rep = None
        if r_hi > lo:
            losses.append(_losses(logits[: r_hi - lo, :L_rep], all_rows[lo:r_hi, :L_rep]).cpu())
            # Detection patterns of this pass's rows only: [rows, L, L] each, never the batch's.
            rep_patterns = {k: detection_pattern(rep[lo:r_hi], k) for k in kinds}
            if custom_on_rep:
                custom_pat_rep = rep_custom(rep[lo:r_hi])
                if lo == 0:
                    custom_pattern = custom_pat_rep[0].cpu().numpy()
        for layer in range(n_layers):
            ctx.check_cancelled()  # scoring a long prompt's pass takes seconds
            pat = cache["pattern", layer]  # [rows, heads, q, k]
            if r_hi > lo:
                p_rep = pat[: r_hi - lo, :, :L_rep, :L_rep]
                rep_sum["induction_stripe"][layer] += stripe_scores(p_rep, T, start).sum(0).cpu()
                for kind in kinds:
                    rep_sum[kind][layer] += detector_scores(
                        p_rep, rep_patterns[kind], **opts).sum(0).cpu()
                if custom_pat_rep is not None:
                    custom_sum[layer] += detector_scores(
                        p_rep, custom_pat_rep, **opts).sum(0).cpu()
            if has_prompt_row:
                p_pr = pat[B - lo: B - lo + 1, :, :n_prompt, :n_prompt]
                for kind in kinds:
                    prompt_scores[kind][layer] = detector_scores(
                        p_pr, prompt_patterns[kind], **opts)[0].cpu()
                if custom_pat_prompt is not None:
                    custom_sum[layer] = detector_scores(p_pr, custom_pat_prompt, **opts)[0].cpu()
        del cache, logits
        ctx.progress(0.1 + 0.85 * (i + 1) / n_passes, f"Scored pass {i + 1} of {n_passes}")
    loss = torch.cat(losses, 0)
    first, second = half_slices(T, has_bos)
    rep_tokens_np = rep.cpu().numpy().astype(np.int64)
    custom_scores = None
    if custom is not None:
        custom_scores = (custom_sum / (B if custom.target == "repeated" else 1)).float().numpy()
        if painted is not None:
            custom_pattern = painted.numpy()
        elif not custom_on_rep:
            custom_pattern = custom_pat_prompt[0].cpu().numpy()
        if float(np.asarray(custom_pattern).sum()) == 0:
            notes.append("The custom pattern has no cells on or below the diagonal, so every "
                         "head scores 0 against it.")
    ctx.progress(1.0, "Done")
    return InductionResult(
        n_layers=n_layers,
        n_heads=n_heads,
        seq_len=T,
        batch=B,
        seed=int(request.seed),
        has_bos=has_bos,
        token_pool=request.token_pool,
        rep_tokens=rep_tokens_np,
        rep_str_tokens=tuple(str_tokens(host, rep[0])),
        repeated={("induction" if k == "induction_stripe" else
                   "induction_detector" if k == "induction" else k): (v / B).float().numpy()
                  for k, v in rep_sum.items()},
        prompt_scores={k: v.float().numpy() for k, v in prompt_scores.items()},
        prompt_str_tokens=tuple(str_tokens(host, prompt_ids)) if prompt_ids is not None else (),
        prompt_token_ids=(prompt_ids.cpu().numpy().astype(np.int64) if prompt_ids is not None
                          else np.zeros(0, dtype=np.int64)),
        loss_per_position=loss.mean(0).numpy().astype(np.float32),
        loss_std=loss.std(0, unbiased=False).numpy().astype(np.float32),
        first_half_loss=float(loss[:, first].mean()),
        second_half_loss=float(loss[:, second].mean()),
        custom_scores=custom_scores,
        custom_pattern=custom_pattern,
        custom_target=custom.target if custom is not None else "",
        custom_label=custom.label if custom is not None else "",
        error_measure=request.error_measure,
        exclude_bos=request.exclude_bos,
        exclude_current_token=request.exclude_current_token,
        n_forward_passes=n_passes,
        seconds=time.perf_counter() - started,
        notes=tuple(notes),
        prompt_ceilings={k: best_possible_score(p[0], **opts)
                         for k, p in prompt_patterns.items()},
        prompt_pattern_rows={k: pattern_rows(p[0]) for k, p in prompt_patterns.items()},
    )


# -- the causal check ----------------------------------------------------------------------------
def control_sets(heads, n_layers: int, n_heads: int, n_sets: int, seed: int):
    """Random head sets of the same size, drawn from the heads *not* ablated when there are enough."""
    chosen = set(heads)
    others = [(la, h) for la in range(n_layers) for h in range(n_heads) if (la, h) not in chosen]
    pool = others if len(others) >= len(chosen) else [(la, h) for la in range(n_layers)
                                                       for h in range(n_heads)]
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(n_sets):
        idx = rng.choice(len(pool), size=len(chosen), replace=False)
        sets.append(tuple(sorted(pool[int(i)] for i in idx)))
    return tuple(sets), pool is not others


@torch.inference_mode()
def run_induction_ablation(host, request: AblationRequest, ctx: JobContext) -> AblationResult:
    """Ablate ``heads`` (zero, or their mean output over the clean batch) on ``hook_z`` and re-run.

    Pass 1 runs the clean repeated sequences (and, for mean ablation, collects the mean ``z`` of
    every head over batch and positions). Pass 2 runs the ablated batch and each random control set
    side by side in one batch: a hook on ``blocks.L.attn.hook_z`` writes the ablation value into the
    rows of the set that contains that head.
    """
    started = time.perf_counter()
    T, B = int(request.seq_len), int(request.batch)
    check_lengths(host, T, B, request.prepend_bos)
    cfg = host.model.cfg
    n_layers, n_heads = int(cfg.n_layers), int(cfg.n_heads)
    heads = tuple(sorted({(int(la), int(h)) for la, h in request.heads}))
    if not heads:
        raise InputError("No heads to ablate.", "Lower the threshold so that some heads are "
                         "marked, then ablate them.")
    for la, h in heads:
        if not (0 <= la < n_layers and 0 <= h < n_heads):
            raise InputError(f"Head L{la}H{h} does not exist in this model.", "Re-scan first.")
    if request.mode not in ("zero", "mean"):
        raise InputError(f"Unknown ablation {request.mode!r}.", "Use zero or mean ablation.")
    if len(heads) == n_layers * n_heads:
        raise InputError("Every head is selected, so a random control set would be the same set.",
                         "Raise the threshold.")
    n_sets = max(0, int(request.control_sets))
    controls, overlapping = control_sets(heads, n_layers, n_heads, n_sets, request.control_seed)
    notes = []
    if overlapping:
        notes.append("More than half of the heads are ablated, so control sets may overlap them.")
    device = host.device
    rep = repeated_tokens(host, T, B, request.seed, request.token_pool,
                          request.prepend_bos).to(device)
    has_bos = _bos_id(host, request.prepend_bos) is not None
    L_rep = int(rep.shape[1])
    per_pass = max(1, min(B, rows_per_pass(host, L_rep, request.max_rows_per_pass)))

    # Pass 1: clean losses and mean z of each head.
    layers_needed = sorted({la for s in (heads, *controls) for la, _ in s})
    z_sum = {la: None for la in layers_needed}
    clean = []

    def collect(z, hook):
        la = int(hook.name.split(".")[1])
        s = z.float().sum((0, 1))
        z_sum[la] = s if z_sum[la] is None else z_sum[la] + s

    ctx.progress(0.05, "Clean run…")
    for lo in range(0, B, per_pass):
        ctx.check_cancelled()
        batch = rep[lo: lo + per_pass]
        hooks = [(f"blocks.{la}.attn.hook_z", collect) for la in layers_needed] \
            if request.mode == "mean" else []
        with cancel_points(host.model, ctx):
            logits = host.model.run_with_hooks(batch, fwd_hooks=hooks)
        clean.append(_losses(logits, batch).cpu())
    means = {la: (v / (B * L_rep)) for la, v in z_sum.items() if v is not None}

    # Pass 2: group 0 = the ablated set, groups 1.. = control sets, each over the whole batch.
    groups = (heads, *controls)
    n_groups = len(groups)
    results = [[] for _ in groups]

    def make_hook(layer: int, group_of_row: torch.Tensor):
        masks = torch.zeros(n_groups, n_heads, dtype=torch.bool, device=device)
        for g, s in enumerate(groups):
            for la, h in s:
                if la == layer:
                    masks[g, h] = True
        row_mask = masks[group_of_row]  # [rows, heads]

        def hook(z, hook):
            value = means[layer].to(z.dtype) if request.mode == "mean" else torch.zeros_like(z[0, 0])
            return torch.where(row_mask[:, None, :, None], value[None, None], z)

        return hook

    seq_per_pass = max(1, per_pass // n_groups)
    n_chunks = -(-B // seq_per_pass)
    for ci, lo in enumerate(range(0, B, seq_per_pass)):
        ctx.check_cancelled()
        batch = rep[lo: lo + seq_per_pass]
        b = batch.shape[0]
        tokens = batch.repeat(n_groups, 1)
        group_of_row = torch.arange(n_groups, device=device).repeat_interleave(b)
        hooks = [(f"blocks.{la}.attn.hook_z", make_hook(la, group_of_row)) for la in layers_needed]
        with cancel_points(host.model, ctx):
            logits = host.model.run_with_hooks(tokens, fwd_hooks=hooks)
        loss = _losses(logits, tokens).cpu()
        for g in range(n_groups):
            results[g].append(loss[g * b:(g + 1) * b])
        ctx.progress(0.3 + 0.65 * (ci + 1) / n_chunks, f"Ablated pass {ci + 1} of {n_chunks}")
    first, second = half_slices(T, has_bos)
    clean_l = torch.cat(clean)
    per_group = [torch.cat(r) for r in results]

    def halves(x: torch.Tensor) -> tuple[float, float]:
        return float(x[:, first].mean()), float(x[:, second].mean())

    ctx.progress(1.0, "Done")
    return AblationResult(
        heads=heads,
        mode=request.mode,
        control_heads=controls,
        loss_clean=clean_l.mean(0).numpy().astype(np.float32),
        loss_ablated=per_group[0].mean(0).numpy().astype(np.float32),
        loss_control=(np.stack([g.mean(0).numpy() for g in per_group[1:]]).astype(np.float32)
                      if controls else np.zeros((0, clean_l.shape[1]), np.float32)),
        clean_halves=halves(clean_l),
        ablated_halves=halves(per_group[0]),
        control_halves=(np.array([halves(g) for g in per_group[1:]], dtype=np.float64)
                        if controls else np.zeros((0, 2))),
        seq_len=T,
        has_bos=has_bos,
        seconds=time.perf_counter() - started,
        notes=tuple(notes),
    )
