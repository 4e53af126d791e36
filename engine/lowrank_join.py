"""The MLP of variants that join a staircase by patching heads' z, as narrow products.

A variant joins the suffix forward at its first patched layer with the base run's resid_pre, so
when its only patch there before the MLP is hook_z on some heads, its attention output is the base
run's plus ``dz_h W_O[h]`` for each patched head h (``dz_h``: patched minus base z of that head,
[positions, d_head]). A sequential pre-norm block's MLP reads ``y = resid_mid``, and its first
product on a LayerNorm or RMSNorm input is

    norm(y) W_in + b_in = (P y) W' / s(y) + (b W_in + b_in),    W' = diag(w) W_in,

with P the centring over d_model (LayerNorm) or the identity (RMSNorm), ``s(y)`` the row's scale
and ``w``, ``b`` the norm's weight (with Gemma's offset) and bias. P is linear, so

    (P y) W' = (P y_base) W' + sum_h dz_h M_h,    M_h = (P W_O[h]) W'  [d_head, d_mlp].

The first term is one product of the base run's rows, shared by every joining variant; ``M_h`` is
kept per model (it is as large as W_in); so each variant's first product costs d_head columns per
patched head instead of d_model (a head sweep patches one head: 1/12 of the product in a
12-head model). ``s(y)`` needs ``y`` itself: the base run's resid_mid plus ``dz_h W_O[h]``, a
d_head-wide product too. Gated MLPs treat their gate the same way. The activation and W_out are
unchanged. When each variant patches one head (a head sweep), the narrow products of all of them
are one batched product; per head they would be many small ones, whose fixed costs ate the
saving at 20 tokens. Building M_h costs as much as a d_model-row product per layer, once per
model (the first head sweep).

Used only where the norm is checked to be this affine form and the MLP's activation is fused
(``SuffixForward``); the suffix forward as a whole is checked with hook_z patches against the
hooked forward before a sweep uses it (``engine.shortcut_check``).
"""

from __future__ import annotations

import weakref

import torch

from engine.dense import ACTS, count_dense, linear, pack, reordered, signature

# The kept M_h of one model stay within this; layers past it use the full products.
LOWRANK_BUDGET_BYTES = 512 << 20

_kept: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {layer: (sig, mats)}


def norm_affine(norm, cfg) -> tuple[bool, torch.Tensor, torch.Tensor | None, float] | None:
    """(centred, weight, bias, eps) of a pre-norm module that computes
    ``(P y) / sqrt(mean((P y)^2) + eps) * weight + bias``, checked on random rows; else None."""
    inner = getattr(norm, "original_component", None)
    try:
        if isinstance(norm, torch.nn.LayerNorm):
            centred, weight, bias, eps = True, norm.weight, norm.bias, float(norm.eps)
        else:
            centred = not bool(norm.uses_rms_norm)
            weight = norm.weight
            if weight is None:
                return None
            if norm.uses_weight_offset:
                weight = 1.0 + weight
            bias = getattr(inner, "bias", None) if centred else None
            eps = float(getattr(cfg, "eps", 1e-5))
        weight = weight.detach()
        bias = None if bias is None else bias.detach()
        g = torch.Generator(device="cpu").manual_seed(1)
        y = (torch.randn(4, 3, weight.shape[0], generator=g) * 3 + 1).to(weight.device,
                                                                          weight.dtype)
        want = norm(y)
        yc = y - y.mean(-1, keepdim=True) if centred else y
        got = yc / (yc.pow(2).mean(-1, keepdim=True) + eps).sqrt() * weight
        if bias is not None:
            got = got + bias
    except Exception:  # noqa: BLE001 - any other module form: not this affine norm
        return None
    if got.shape != want.shape or float((got - want).abs().max()) > 1e-5 * max(
            1.0, float(want.abs().max())):
        return None
    return centred, weight, bias, eps


def add_head_products(targets, dz: torch.Tensor, active: torch.Tensor) -> None:
    """Add ``dz_h M_h`` for every head h a variant patches to each ``(target [variants, width,
    out], M [heads, d_head, out])``; ``dz`` [variants, width, heads, d_head], ``active``
    [variants, heads]. When each variant patches one head (a head sweep) it is one batched
    product (with M as kept when the variants are the heads in order); per head, many small
    products' fixed costs ate the saving at 20 tokens."""
    n_var, width, n_heads, d_head = dz.shape
    if bool((active.sum(1) == 1).all()):
        heads = active.int().argmax(1)
        d_sel = dz[torch.arange(n_var, device=dz.device), :, heads]  # [variants, width, d_head]
        same = n_var == n_heads and bool((heads == torch.arange(n_heads,
                                                                device=heads.device)).all())
        for target, weight in targets:
            target.baddbmm_(d_sel, weight if same else weight[heads])
        return
    for head in active.any(0).nonzero()[:, 0].tolist():
        idx = active[:, head].nonzero()[:, 0]
        d_h = dz[idx, :, head].reshape(-1, d_head)
        for target, weight in targets:
            target.index_add_(0, idx, (d_h @ weight[head]).reshape(len(idx), width, -1))


class LowRankJoin:
    """Resid_post of joining rows whose layer-``l`` patch is hook_z only (see the module doc)."""

    def __init__(self, model, form, norms: dict) -> None:
        self.model, self.form, self._norms = model, form, norms
        self._affine: dict[int, tuple | None] = {}
        self.rows = 0  # variant-positions whose MLP took this path (for tests and benches)

    def usable(self, layer: int, patches) -> bool:
        """Whether ``layer``'s joining rows can take this path: a sequential block with a fused
        activation, an affine pre-norm, float32 weights, and no patch at this layer between z and
        the MLP's output."""
        form = self.form
        if form.parallel or form.act is None:
            return False
        prefix = f"blocks.{layer}."
        if prefix + "attn.hook_z" not in patches or any(
                prefix + kind in patches for kind in ("hook_attn_out", "hook_resid_mid",
                                                      "hook_mlp_out")):
            return False
        if layer not in self._affine:
            w_o = self.model.blocks[layer].attn.W_O
            self._affine[layer] = (norm_affine(self._norms[layer, "ln2"], self.model.cfg)
                                   if w_o.dtype == torch.float32 else None)
        return self._affine[layer] is not None and self._mats(layer) is not None

    def _mats(self, layer: int) -> dict | None:
        """The layer's narrow products, kept per model while they fit the budget."""
        block = self.model.blocks[layer]
        w_o, mlp = block.attn.W_O, block.mlp
        centred, weight, bias, _eps = self._affine[layer]
        sources = [w_o, mlp.W_in, weight] + ([mlp.W_gate] if self.form.gated else [])
        sig = signature(sources)
        store = _kept.setdefault(self.model, {})
        hit = store.get(layer)
        if hit is not None and hit[0] == sig:
            return hit[1]
        n_heads, d_head, d_model = w_o.shape
        d_mlp = mlp.W_in.shape[1]
        # TransformerLens folds the norms' weights into the next products (weight 1): W' is then
        # W_in itself, packed once for the MLP (engine.dense.pack); otherwise it is kept here.
        folded = bool((weight == 1).all())
        size = (1 + self.form.gated) * d_mlp * (n_heads * d_head + (0 if folded else d_model))
        used = sum(m["bytes"] for k, (_s, m) in store.items() if k != layer)
        if used + 4 * size > LOWRANK_BUDGET_BYTES:
            return None
        with torch.inference_mode():
            w_oc = w_o - w_o.mean(-1, keepdim=True) if centred else w_o
            flat_o = w_oc.reshape(n_heads * d_head, d_model)

            def narrow(key, w_mat, b_mat):
                """(M_h of every head [heads, d_head, d_mlp], W' as a linear weight
                [d_mlp, d_model], the constant b W + b_mat)."""
                w_eff = w_mat if folded else w_mat * weight[:, None]
                m = (flat_o @ w_eff).reshape(n_heads, d_head, d_mlp)
                const = b_mat
                if bias is not None:
                    const = bias @ w_mat + (0 if b_mat is None else b_mat)
                w_lin = (pack(self.model, (key, layer), (w_mat,), lambda: w_mat.t()) if folded
                         else reordered(w_eff.t()))
                return m, w_lin, const

            mats = {"o": w_o.detach().contiguous(),  # [heads, d_head, d_model]
                    "in": narrow("mlp_in", mlp.W_in, mlp.b_in), "bytes": 4 * size}
            if self.form.gated:
                mats["gate"] = narrow("mlp_gate", mlp.W_gate, getattr(mlp, "b_gate", None))
        store[layer] = (sig, mats)
        return mats

    def __call__(self, layer: int, y_base: torch.Tensor, dz: torch.Tensor,
                 n_pairs: int) -> torch.Tensor:
        """Resid_post [R, T, d_model] of ``R`` joining rows (variants x pairs) from the base
        run's resid_mid ``y_base`` [pairs, T, d_model] and their z minus the base run's, ``dz``
        [R, T, heads, d_head]."""
        mats = self._mats(layer)
        centred, _w, _b, eps = self._affine[layer]
        n_rows, n_pos, n_heads, d_head = dz.shape
        n_var, width = n_rows // n_pairs, n_pairs * n_pos
        d_model = y_base.shape[-1]
        dz = dz.reshape(n_var, width, n_heads, d_head)
        active = dz.ne(0).any(3).any(1)  # [variants, heads]: the heads each one patches
        yb = y_base.reshape(width, d_model)
        ybc = yb - yb.mean(-1, keepdim=True) if centred else yb
        # (P y_base) W' of the base rows, once for all variants: [variants, width, d_mlp]
        firsts = {key: linear(ybc, mats[key][1], None).repeat(n_var, 1, 1)
                  for key in ("in", "gate") if key in mats}
        delta = yb.new_zeros(n_var, width, d_model)
        targets = [(delta, mats["o"])] + [(first, mats[key][0]) for key, first in firsts.items()]
        count_dense(2 * int(active.sum()) * width * d_head * sum(w.shape[-1] for _t, w in targets))
        add_head_products(targets, dz, active)
        y = delta.add_(yb)
        yc = y - y.mean(-1, keepdim=True) if centred else y
        scale = (yc.pow(2).mean(-1, keepdim=True) + eps).sqrt()
        act = ACTS[self.form.act][1]

        def pre(key: str) -> torch.Tensor:  # the first product of norm(y): / s(y), + constant
            out = firsts[key].div_(scale)
            return out if mats[key][2] is None else out.add_(mats[key][2])

        hidden = pre("in")
        hidden = hidden.mul_(act(pre("gate"))) if "gate" in firsts else act(hidden)
        mlp = self.model.blocks[layer].mlp
        w_out = pack(self.model, ("mlp_out", layer), (mlp.W_out,), lambda: mlp.W_out.t())
        self.rows += n_var * n_pos
        out = linear(hidden.reshape(-1, hidden.shape[-1]), w_out, getattr(mlp, "b_out", None),
                     residual=y.reshape(-1, d_model))
        return out.reshape(n_rows, n_pos, d_model)
