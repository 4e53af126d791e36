"""Feature dashboards: what makes each feature fire over a corpus, and what it writes.

One batched pass over the corpus (the model run only up to the SAE's hook) keeps, for every
feature at once: its density (fraction of tokens where it fires), maximum and mean activation,
a histogram of log10 activation, and its ``top_k`` top-activating tokens, each with a window of
the tokens around it and the feature's activation on every token of the window (so showing a
feature needs no further model run). The result is cached on disk per SAE, model and corpus.

What a feature writes comes from the weights alone: its decoder direction mapped into the
residual stream (``W_out`` for MLP neurons, ``W_O`` for z) and through the unembedding gives the
tokens it promotes and suppresses (Neuronpedia's "logit effects"; the final LayerNorm's scale is
left out, as there).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.errors import InputError
from engine.jobs import JobContext
from engine.sae import SparseAutoencoder, parse_hook
from engine.sae_io import LoadedSAE, _atomic_write, get_sae
from engine.sae_splice import activations
from engine.text_source import TextSource, source_digest, token_rows

FORMAT = 1
HIST_EDGES = np.linspace(-4.0, 4.0, 81).astype(np.float32)  # log10(activation) bins
WINDOW_BEFORE, WINDOW_AFTER = 12, 4
# On a CPU, a batch of at most this many tokens (bigger ones gain little there), so each block
# of the forward (the span between two cancel checks) stays well under a second at 12x d768.
CPU_TOKENS_PER_BATCH = 2048


@dataclass(frozen=True)
class DashboardRequest:
    sae_folder: str
    source: TextSource = field(default_factory=TextSource)
    n_tokens: int = 1_000_000
    context_size: int = 128
    top_k: int = 20
    cache_dir: str = ""  # "" = compute, never cache
    tokens_per_batch: int = 8192
    cache_only: bool = False  # True: return the cached result, or None (nothing computed)


@dataclass(frozen=True)
class FeatureStats:
    """Every feature's dashboard numbers (axis 0 = feature)."""

    key: str
    sae_name: str
    hook_name: str
    source_label: str
    n_tokens: int
    density: np.ndarray  # [F] float32
    max_act: np.ndarray  # [F] float32
    mean_act: np.ndarray  # [F] float32, mean over the tokens where it fires
    hist: np.ndarray  # [F, bins] int32, counts of log10(activation) in HIST_EDGES
    top_acts: np.ndarray  # [F, K] float32 (0 = no context)
    window_tokens: np.ndarray  # [F, K, W] int32 token ids (-1 = outside the row)
    window_acts: np.ndarray  # [F, K, W] float32
    seconds: float
    from_cache: bool = False

    @property
    def window_center(self) -> int:
        return WINDOW_BEFORE

    @property
    def hist_edges(self) -> np.ndarray:
        return HIST_EDGES


@dataclass(frozen=True)
class LogitEffects:
    top_ids: np.ndarray  # [F, n] int64: most promoted tokens
    top_values: np.ndarray  # [F, n] float32
    bottom_ids: np.ndarray  # [F, n] int64: most suppressed
    bottom_values: np.ndarray  # [F, n] float32


def output_map(model, hook_name: str) -> torch.Tensor | None:
    """The matrix taking the hook's space into the residual stream (None: it is the stream)."""
    layer, suffix = parse_hook(hook_name)
    if suffix == "mlp.hook_post":
        return model.W_out[layer].float()
    if suffix == "attn.hook_z":
        w_o = model.W_O[layer].float()
        return w_o.reshape(-1, w_o.shape[-1])
    return None


def residual_directions(model, sae: SparseAutoencoder) -> torch.Tensor:
    """Each feature's decoder direction in the residual stream [F, d_model]."""
    dirs = sae.decoder_directions()
    m = output_map(model, sae.cfg.hook_name)
    return dirs if m is None else dirs @ m.to(dirs.device)


@torch.inference_mode()
def logit_effects(host, loaded: LoadedSAE, n: int = 10, chunk: int = 1024) -> LogitEffects:
    model = host.model
    dirs = residual_directions(model, loaded.sae)
    w_u = model.W_U.float().to(dirs.device)
    n = min(n, int(w_u.shape[1]))
    parts = []
    for i in range(0, dirs.shape[0], chunk):
        eff = dirs[i:i + chunk] @ w_u
        top, bottom = eff.topk(n, dim=-1), (-eff).topk(n, dim=-1)
        parts.append((top.indices, top.values, bottom.indices, -bottom.values))
    cat = [torch.cat([p[j] for p in parts]).cpu() for j in range(4)]
    return LogitEffects(cat[0].numpy().astype(np.int64), cat[1].numpy().astype(np.float32),
                        cat[2].numpy().astype(np.int64), cat[3].numpy().astype(np.float32))


def model_identity(host) -> str:
    """The model's identity from its files (portable: a cache built on one machine, such as the
    bundled SAE's shipped dashboards, is found on another): for config.json and every
    safetensors file, its name, size, header and first MiB; plus the dtype it runs in."""
    info = host.info
    cached = host.__dict__.get("_model_identity")
    if cached is not None:
        return cached
    h = hashlib.sha256(f"{info.dtype}|{info.n_params}|{info.d_model}|{info.n_layers}".encode())
    folder = Path(info.folder)
    files = sorted(folder.glob("*.safetensors")) + [folder / "config.json"]
    for path in files:
        if path.is_file():
            h.update(f"{path.name}|{path.stat().st_size}".encode())
            with path.open("rb") as f:
                h.update(f.read(1 << 20))
    host.__dict__["_model_identity"] = h.hexdigest()[:24]
    return host.__dict__["_model_identity"]


def cache_key(host, loaded: LoadedSAE, request: DashboardRequest) -> str:
    parts = [str(FORMAT), loaded.digest, model_identity(host), source_digest(request.source),
             str(request.n_tokens), str(request.context_size), str(request.top_k),
             str(WINDOW_BEFORE), str(WINDOW_AFTER)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


_ARRAYS = ("density", "max_act", "mean_act", "hist", "top_acts", "window_tokens", "window_acts")


def _save(path: Path, stats: FeatureStats) -> None:
    from safetensors.numpy import save as st_save

    meta = {"format": FORMAT, "key": stats.key, "sae_name": stats.sae_name,
            "hook_name": stats.hook_name, "source_label": stats.source_label,
            "n_tokens": stats.n_tokens, "seconds": stats.seconds}
    data = st_save({k: np.ascontiguousarray(getattr(stats, k)) for k in _ARRAYS},
                   metadata={"lensbench_dashboard": json.dumps(meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, data)


def _load(path: Path, key: str, d_sae: int, top_k: int) -> FeatureStats | None:
    """A cached result, or None when absent, stale or malformed (then it is recomputed)."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = json.loads((f.metadata() or {}).get("lensbench_dashboard", "{}"))
            arrays = {k: f.get_tensor(k) for k in _ARRAYS}
    except Exception:  # noqa: BLE001 - a damaged cache file is simply rebuilt
        return None
    w = WINDOW_BEFORE + 1 + WINDOW_AFTER
    want = {"density": (d_sae,), "max_act": (d_sae,), "mean_act": (d_sae,),
            "hist": (d_sae, len(HIST_EDGES) - 1), "top_acts": (d_sae, top_k),
            "window_tokens": (d_sae, top_k, w), "window_acts": (d_sae, top_k, w)}
    if meta.get("key") != key or meta.get("format") != FORMAT or any(
            arrays[k].shape != s for k, s in want.items()):
        return None
    return FeatureStats(key, str(meta.get("sae_name", "")), str(meta.get("hook_name", "")),
                        str(meta.get("source_label", "")), int(meta.get("n_tokens", 0)),
                        seconds=float(meta.get("seconds", 0.0)), from_cache=True, **arrays)


def batch_top_k(tok: torch.Tensor, feat: torch.Tensor, vals: torch.Tensor, d_sae: int,
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each feature's ``k`` largest activations among a batch's nonzero entries (token index
    ``tok``, feature ``feat``, value ``vals``): values [F, k] (0 where fewer) and token indices
    [F, k] (-1 there). Sorting the nonzero entries costs O(nnz log nnz), not O(tokens x F)."""
    order = torch.argsort(vals, descending=True, stable=True)
    order = order[torch.argsort(feat[order], stable=True)]
    f_sorted = feat[order]
    counts = torch.bincount(f_sorted, minlength=d_sae)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(order), device=vals.device) - starts[f_sorted]
    keep = rank < k
    chosen, fk, rk = order[keep], f_sorted[keep], rank[keep]
    top_vals = torch.zeros(d_sae, k, device=vals.device)
    top_tok = torch.full((d_sae, k), -1, dtype=torch.long, device=vals.device)
    top_vals[fk, rk] = vals[chosen]
    top_tok[fk, rk] = tok[chosen]
    return top_vals, top_tok


class _TopK:
    """Running top-k tokens per feature, with their windows."""

    def __init__(self, d_sae: int, k: int, width: int, device) -> None:
        self.acts = torch.zeros(d_sae, k, device=device)
        self.tokens = torch.full((d_sae, k, width), -1, dtype=torch.int32, device=device)
        self.window = torch.zeros(d_sae, k, width, device=device)
        self.k = k

    def update(self, f: torch.Tensor, tokens: torch.Tensor, vals: torch.Tensor,
               idx: torch.Tensor) -> None:
        """``f`` [rows, ctx, F] activations of a batch, ``tokens`` [rows, ctx]; ``vals``/``idx``
        [F, k] the batch's top activations per feature and their flat token indices (-1: none)."""
        rows, ctx, d_sae = f.shape
        found = idx >= 0
        idx = idx.clamp_min(0)
        r, p = idx // ctx, idx % ctx
        offsets = torch.arange(-WINDOW_BEFORE, WINDOW_AFTER + 1, device=f.device)
        pw = p[..., None] + offsets  # [F, k, W]
        inside = (pw >= 0) & (pw < ctx) & found[..., None]
        pw = pw.clamp(0, ctx - 1)
        rw = r[..., None].expand_as(pw)
        feat = torch.arange(d_sae, device=f.device)[:, None, None].expand_as(pw)
        win = torch.where(inside, f[rw, pw, feat], torch.zeros((), device=f.device))
        toks = torch.where(inside, tokens[rw, pw].to(torch.int32),
                           torch.full((), -1, dtype=torch.int32, device=f.device))
        all_acts = torch.cat([self.acts, vals], dim=1)
        best = all_acts.topk(self.k, dim=1).indices
        self.acts = all_acts.gather(1, best)
        w = pw.shape[-1]
        self.window = torch.cat([self.window, win], 1).gather(1, best[..., None].expand(-1, -1, w))
        self.tokens = torch.cat([self.tokens, toks], 1).gather(1, best[..., None].expand(-1, -1,
                                                                                          w))


@torch.inference_mode()
def run_dashboards(host, request: DashboardRequest, ctx: JobContext) -> FeatureStats | None:
    """Every feature's dashboard over ``request.n_tokens`` tokens (from the disk cache when the
    same SAE, model and corpus were done before)."""
    started = time.perf_counter()
    if not 1 <= request.top_k <= 200:
        raise InputError(f"{request.top_k} contexts per feature is out of range.", "Use 1-200.")
    if request.n_tokens < request.context_size:
        raise InputError("Too few tokens for one context.", "Use more tokens.")
    loaded = get_sae(host, request.sae_folder)
    sae = loaded.sae
    ctx.progress(0.0, "Looking for cached dashboards…")
    key = cache_key(host, loaded, request)
    path = Path(request.cache_dir) / f"{key}.safetensors" if request.cache_dir else None
    # an SAE folder may ship its dashboards (the bundled SAE does): checked like any cache file
    for candidate in (path, Path(loaded.folder) / "dashboards" / f"{key}.safetensors"):
        if candidate is not None:
            cached = _load(candidate, key, sae.cfg.d_sae, request.top_k)
            if cached is not None:
                ctx.progress(1.0, "Loaded the dashboards from the cache")
                return cached
    if request.cache_only:
        return None
    d_sae = sae.cfg.d_sae
    device = sae.device
    fires = torch.zeros(d_sae, dtype=torch.float64, device=device)
    total = torch.zeros(d_sae, dtype=torch.float64, device=device)
    edges = torch.as_tensor(HIST_EDGES, device=device)
    n_bins = len(HIST_EDGES) - 1
    hist = torch.zeros(d_sae * n_bins, dtype=torch.int64, device=device)
    top = _TopK(d_sae, request.top_k, WINDOW_BEFORE + 1 + WINDOW_AFTER, device)
    per_batch = min(request.tokens_per_batch, max(1, 2**26 // d_sae))
    if device.type == "cpu":  # Cancel waits for one block of a batch's forward
        per_batch = min(per_batch, CPU_TOKENS_PER_BATCH)
    rows_per_batch = max(1, per_batch // request.context_size)
    seen = 0
    for tokens in token_rows(host, request.source, request.context_size, request.n_tokens,
                             rows_per_batch, ctx):
        ctx.check_cancelled()
        act = activations(host.model, tokens, sae.cfg.hook_name)
        ctx.check_cancelled()
        f = sae.encode(sae.flat(act))  # [rows, ctx, F]
        ctx.check_cancelled()
        flat = f.reshape(-1, d_sae)
        # everything below works on the nonzero entries only (a few per token), not tokens x F
        nz = torch.nonzero(flat > 0)
        tok_i, feat_i = nz[:, 0], nz[:, 1]
        vals = flat[tok_i, feat_i]
        fires += torch.bincount(feat_i, minlength=d_sae).double()
        total += torch.bincount(feat_i, weights=vals.double(), minlength=d_sae)
        if len(vals):
            b = torch.bucketize(torch.log10(vals), edges[1:-1])
            hist.index_add_(0, feat_i * n_bins + b, torch.ones_like(b))
        top_vals, top_idx = batch_top_k(tok_i, feat_i, vals, d_sae, request.top_k)
        ctx.check_cancelled()
        top.update(f, tokens, top_vals, top_idx)
        seen += int(tokens.numel())
        ctx.progress(min(0.99, seen / request.n_tokens),
                     f"Feature dashboards: {seen:,} of {request.n_tokens:,} tokens…")
    if seen == 0:
        raise InputError("The text source gave no tokens.", "Pick a longer text.")
    density = (fires / seen).float()
    mean = torch.where(fires > 0, total / fires.clamp_min(1), torch.zeros_like(total)).float()
    stats = FeatureStats(
        key=key, sae_name=loaded.name, hook_name=sae.cfg.hook_name,
        source_label=request.source.label(), n_tokens=seen,
        density=density.cpu().numpy(), max_act=top.acts[:, 0].cpu().numpy(),
        mean_act=mean.cpu().numpy(),
        hist=hist.reshape(d_sae, n_bins).to(torch.int32).cpu().numpy(),
        top_acts=top.acts.cpu().numpy(), window_tokens=top.tokens.cpu().numpy(),
        window_acts=top.window.cpu().numpy(), seconds=time.perf_counter() - started)
    if path is not None:
        try:
            _save(path, stats)
        except OSError:
            pass  # no cache this time; the result is still shown
    ctx.progress(1.0, "Feature dashboards done")
    return stats
