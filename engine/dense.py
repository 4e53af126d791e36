"""Dense layers for the batched patching forwards: ``F.linear`` with the activation or the
residual add fused in, on oneDNN where that is faster.

On a CPU with float32 tensors, PyTorch's ``addmm`` goes to MKL, which on the small-to-medium
shapes of patched sweeps (tens to a few thousand rows, d_model in the hundreds) runs well below
the machine's GEMM peak, and the activation and the residual add each make one more pass over
memory. oneDNN's linear primitive (the one PyTorch's own compiler, inductor, emits for CPU
linears) runs these shapes 1.1-4x faster (most at few rows), applies GELU/ReLU/SiLU or adds the residual in the same
pass, and is faster again on weights reordered into its own blocked layout ("packed"), which
``pack`` keeps per model within ``PACK_BUDGET_BYTES``. ``bench/bench_gemm.py`` measures all three
on the machine at hand.

Everything else (CUDA, MPS, half precision, a PyTorch built without oneDNN, an activation oneDNN
does not fuse) takes ``F.linear`` and in-place PyTorch ops. The oneDNN path is checked once
against ``F.linear`` on a small input and not used if it disagrees or fails.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

# TransformerLens act_fn name -> (oneDNN post-op, its algorithm), and the in-place PyTorch kernel
# computing the same function (gelu_new is the tanh approximation written out in five elementwise
# steps; the fused kernel is one pass).
ACTS = {
    "gelu_new": (("gelu", "tanh"), lambda x: torch.ops.aten.gelu_(x, approximate="tanh")),
    "gelu_pytorch_tanh": (("gelu", "tanh"), lambda x: torch.ops.aten.gelu_(x, approximate="tanh")),
    "gelu": (("gelu", "none"), lambda x: torch.ops.aten.gelu_(x)),
    "relu": (("relu", ""), torch.relu_),
    "silu": (("swish", ""), lambda x: F.silu(x, inplace=True)),
}
NO_ACT = (("none", ""), lambda x: x)
# Packed copies of one model's weights are kept while they fit in this (about the layers of a
# 12-layer, d_model 768 model twice over); larger models use their weights as they are.
PACK_BUDGET_BYTES = 1 << 30

_onednn_ok: bool | None = None  # probed on first use


class FlopCount:
    """Multiply-add FLOPs of the dense layers (and, counted by their callers, attention) while a
    ``with counting() as c:`` block runs: the benches compare a sweep's time with the time its
    matrix products need at the machine's measured rate."""

    def __init__(self) -> None:
        self.dense = 0
        self.attention = 0

    @property
    def total(self) -> int:
        return self.dense + self.attention


_count: FlopCount | None = None


class counting:  # noqa: N801 - used as a context manager, like torch's own
    def __enter__(self) -> FlopCount:
        global _count
        _count = FlopCount()
        return _count

    def __exit__(self, *exc) -> None:
        global _count
        _count = None


def count_dense(flops: int) -> None:
    """Dense FLOPs of products that do not go through ``linear`` (batched narrow ones)."""
    if _count is not None:
        _count.dense += int(flops)


def count_attention(flops: int) -> None:
    if _count is not None:
        _count.attention += int(flops)
_packs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # owner -> {key: (source signature, packed)}


def _probe() -> bool:
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        with torch.inference_mode():
            g = torch.Generator().manual_seed(0)
            x = torch.randn(5, 24, generator=g)
            w = torch.randn(24, 16, generator=g)  # [in, out], used through a transposed view
            b = torch.randn(16, generator=g)
            r = torch.randn(5, 16, generator=g)
            packed = torch.ops.mkldnn._reorder_linear_weight(w.t().contiguous())
            for (attr, alg), act in (NO_ACT, ACTS["gelu_new"], ACTS["relu"]):
                want = act(F.linear(x, w.t(), b))
                for weight in (w.t(), packed):
                    if not torch.allclose(op(x, weight, b, attr, [], alg), want, 1e-5, 1e-5):
                        return False
            got = torch.ops.mkldnn._linear_pointwise.binary(x, r, packed, b, "add")
            return torch.allclose(got, r + F.linear(x, w.t(), b), 1e-5, 1e-5)
    except (RuntimeError, TypeError, NotImplementedError, AttributeError):
        return False


def _onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether this product goes to oneDNN: CPU, float32, no gradient wanted (the op has no
    backward), and the probe passed."""
    global _onednn_ok
    if getattr(weight, "is_mkldnn", False):
        return True
    if not (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))):
        return False
    if _onednn_ok is None:
        _onednn_ok = _probe()
    return _onednn_ok


def fusable(act_fn: str) -> bool:
    """Whether ``linear`` can apply this TransformerLens activation itself."""
    return act_fn in ACTS


def reordered(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` ([out, in]) in oneDNN's blocked layout where ``linear`` uses oneDNN (kept by
    the caller: a plain weight is reordered on every call), else as it is."""
    if not _onednn(weight, weight):
        return weight
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous())


def signature(sources) -> tuple:
    """What a derived weight kept per model depends on: each source tensor's storage, in-place
    version (inference tensors keep no version counter), shape and strides."""
    return tuple((t.data_ptr(), -1 if t.is_inference() else t._version, tuple(t.shape),
                  t.stride()) for t in sources)


def pack(owner, key, sources: tuple, make) -> torch.Tensor:
    """The weight ``make()`` builds ([out, in], from the tensors ``sources``), reordered for oneDNN
    and kept on ``owner`` (the model) under ``key`` for later calls; or ``make()`` as it is where
    oneDNN is not used or the owner's budget is spent. A kept copy is rebuilt when a source's
    storage or in-place version changes."""
    first = sources[0]
    if not _onednn(first, first):
        return make()
    store = _packs.setdefault(owner, {})
    sig = signature(sources)
    hit = store.get(key)
    if hit is not None and hit[0] == sig:
        return hit[1]
    weight = make()
    used = sum(p.numel() * p.element_size() for k, (_, p) in store.items() if k != key)
    if used + weight.numel() * weight.element_size() > PACK_BUDGET_BYTES:
        return weight
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous())
    store[key] = (sig, packed)
    return packed


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           act_fn: str | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``act(x @ weight.T + bias)``, plus ``residual`` if given (then without activation), for a
    2-D ``x``. ``weight`` is [out, in] as in ``F.linear`` (a transposed view of a TransformerLens
    [in, out] matrix is fine) or from ``pack``; ``act_fn`` a key of ``ACTS`` or None."""
    if act_fn and residual is not None:
        raise ValueError("linear: an activation and a residual cannot be fused together")
    if _count is not None:
        _count.dense += 2 * x.shape[0] * x.shape[1] * weight.shape[0]
    (attr, alg), act = ACTS[act_fn] if act_fn else NO_ACT
    if _onednn(x, weight):
        x = x.contiguous()
        if residual is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(
                x, residual.contiguous(), weight, bias, "add")
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], alg)
    out = act(F.linear(x, weight, bias))
    return out if residual is None else out.add_(residual)
