"""A parallel block's next layer after a head's z patch, as narrow products.

In a parallel block (GPT-NeoX/Pythia, GPT-J, Phi, Falcon) the MLP reads resid_pre, not resid_mid.
A variant that joins the suffix forward at layer l by patching only z there therefore keeps the
base run's MLP output at l, and leaves it with

    y = y_base + sum_h dz_h W_O[h]        (y: resid_pre of layer l + 1)

where ``dz_h`` is its z minus the base run's for head h [positions, d_head]. Everything layer
l + 1 reads of y first goes through a norm and a product: the query and key/value projections
(after ln1) and the MLP's first product (after its norm; gated MLPs have two). For a norm of the
affine form ``norm(y) = (P y) / s(y) * w + b`` (P: the centring of LayerNorm, or the identity
for RMSNorm; ``s(y)`` the row's scale), each of them is

    norm(y) W + c = ((P y_base) W' + sum_h dz_h M_h) / s(y) + (b W + c),
    W' = diag(w) W,   M_h = (P W_O[h]) W'   [d_head, width],

as in ``engine.lowrank_join`` one layer earlier. ``(P y_base) W'`` is one product of the base
run's rows for all variants; each variant then costs d_head columns per patched head instead of
d_model (1/12 of these products for a 12-head model, about half of the layer). ``s(y)`` comes
from y itself, which the suffix forward already holds. The M_h are kept per model within a
budget (they are about as large as the layer's projections and its MLP's first matrix).

Used only where the norms are checked to be this affine form; the suffix forward as a whole is
checked with single-head z patches against the hooked forward before a sweep uses it
(``engine.shortcut_check``).
"""

from __future__ import annotations

import weakref

import torch

from engine.dense import ACTS, count_dense, linear, signature
from engine.lowrank_join import add_head_products, norm_affine
from engine.patch_hooks import Hooks, patched_positions
from engine.suffix_attention import _flat

# The kept M_h of one model stay within this; layers past it use the full products.
NEXT_BUDGET_BYTES = 512 << 20

_kept: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {layer: (sig, mats)}


class NextLayerJoin:
    """Projections of layer ``l + 1`` for rows that joined at ``l`` patching z only, in a
    parallel block (see the module doc)."""

    def __init__(self, model, form, norms: dict, weights, with_mlp: bool) -> None:
        """``norms[layer, name]``: the bridge's norm modules; ``weights(layer)``: the suffix
        forward's attention weights; ``with_mlp``: also the MLP's first products (where the
        suffix forward fuses the MLP's activation)."""
        self.model, self.form, self._norms = model, form, norms
        self._weights, self.with_mlp = weights, with_mlp
        self._affine: dict[tuple[int, str], tuple | None] = {}
        self.rows = 0  # variant-positions projected this way (for tests and benches)

    def _norm(self, layer: int, name: str):
        key = (layer, name)
        if key not in self._affine:
            self._affine[key] = norm_affine(self._norms[layer, name], self.model.cfg)
        return self._affine[key]

    def usable(self, layer: int) -> bool:
        """Whether ``layer`` (> 0) of a parallel block with float32 weights and affine norms can
        take these products (and their M_h fit the budget)."""
        if not self.form.parallel or layer < 1:
            return False
        if self.model.blocks[layer - 1].attn.W_O.dtype != torch.float32:
            return False
        if self._norm(layer, "ln1") is None or self._norm(layer, self.form.mlp_norm) is None:
            return False
        return self._mats(layer) is not None

    def _targets(self, layer: int) -> list[tuple[str, str, torch.Tensor, torch.Tensor | None]]:
        """(key, norm name, weight [out, d_model] as F.linear takes it, bias) of each product
        that reads the normed input."""
        w = self._weights(layer)
        attn = self.model.blocks[layer].attn
        mlp = self.model.blocks[layer].mlp
        out = [("q", "ln1", _flat(attn.W_Q), w["bq"]),
               ("kv", "ln1", torch.cat([_flat(attn.W_K), _flat(attn.W_V)]), w["bkv"])]
        if self.with_mlp:
            out.append(("in", self.form.mlp_norm, mlp.W_in.t(), mlp.b_in))
        if self.with_mlp and self.form.gated:
            out.append(("gate", self.form.mlp_norm, mlp.W_gate.t(),
                        getattr(mlp, "b_gate", None)))
        return out

    def _mats(self, layer: int) -> dict | None:
        attn, mlp = self.model.blocks[layer].attn, self.model.blocks[layer].mlp
        w_o = self.model.blocks[layer - 1].attn.W_O
        sources = [w_o, attn.W_Q, attn.W_K, attn.W_V] + (
            [mlp.W_in] + ([mlp.W_gate] if self.form.gated else []) if self.with_mlp else [])
        sources += [self._norm(layer, n)[1] for n in ("ln1", self.form.mlp_norm)]
        sig = signature(sources)
        store = _kept.setdefault(self.model, {})
        hit = store.get(layer)
        if hit is not None and hit[0] == sig:
            return hit[1]
        targets = self._targets(layer)
        n_heads, d_head, d_model = w_o.shape
        width = sum(t[2].shape[0] for t in targets)
        size = 4 * width * (n_heads * d_head + d_model)
        used = sum(m["bytes"] for k, (_s, m) in store.items() if k != layer)
        if used + size > NEXT_BUDGET_BYTES:
            return None
        mats: dict = {"bytes": size}
        with torch.inference_mode():
            for key, norm_name, weight, bias in targets:
                centred, w_norm, b_norm, eps = self._norm(layer, norm_name)
                w_oc = w_o - w_o.mean(-1, keepdim=True) if centred else w_o
                w_eff = (weight * w_norm).contiguous()  # [out, d_model]: W' as F.linear takes it
                m = (w_oc.reshape(-1, d_model) @ w_eff.t()).reshape(n_heads, d_head, -1)
                const = bias
                if b_norm is not None:
                    const = b_norm @ weight.t() + (0 if bias is None else bias)
                mats[key] = (m.contiguous(), w_eff, const, centred, eps)
        store[layer] = (sig, mats)
        return mats

    def __call__(self, layer: int, y_base: torch.Tensor, y: torch.Tensor, dz: torch.Tensor,
                 n_pairs: int) -> dict[str, torch.Tensor]:
        """Each product's output [R, T, width] (``q``, ``kv``, ``in`` and ``gate``: the MLP's
        first products before the activation) for ``R`` rows (variants x pairs) whose resid_pre
        here is ``y`` [R, T, d_model], the base run's ``y_base`` [pairs, T, d_model] plus their
        z change at the layer before, ``dz`` [R, T, heads, d_head]."""
        mats = self._mats(layer)
        n_rows, n_pos, n_heads, d_head = dz.shape
        n_var, width = n_rows // n_pairs, n_pairs * n_pos
        d_model = y.shape[-1]
        dz = dz.reshape(n_var, width, n_heads, d_head)
        active = dz.ne(0).any(3).any(1)  # [variants, heads]
        yb = y_base.reshape(width, d_model)
        yf = y.reshape(n_var, width, d_model)
        scales: dict = {}

        def scale(centred: bool, eps: float) -> torch.Tensor:
            if (centred, eps) not in scales:
                yc = yf - yf.mean(-1, keepdim=True) if centred else yf
                scales[centred, eps] = (yc.pow(2).mean(-1, keepdim=True) + eps).sqrt()
            return scales[centred, eps]

        keys = [key for key in mats if key != "bytes"]
        centred_rows: dict = {}
        firsts = {}
        for key in keys:  # (P y_base) W' of the base rows, for every variant
            _m, w_eff, _c, centred, _eps = mats[key]
            if centred not in centred_rows:
                centred_rows[centred] = yb - yb.mean(-1, keepdim=True) if centred else yb
            firsts[key] = linear(centred_rows[centred], w_eff, None).repeat(n_var, 1, 1)
            count_dense(2 * int(active.sum()) * width * d_head * mats[key][0].shape[-1])
        add_head_products([(firsts[key], mats[key][0]) for key in keys], dz, active)
        out = {}
        for key in keys:
            _m, _w, const, centred, eps = mats[key]
            first = firsts[key].div_(scale(centred, eps))
            if const is not None:
                first.add_(const)
            out[key] = first.reshape(n_rows, n_pos, -1)
        self.rows += n_var * n_pos
        return out


class NextJoinLayer:
    """The suffix forward's side of it (a mixin of ``engine.suffix_forward.SuffixForward``,
    whose state and helpers it uses): which rows qualify, and the layer they take it in."""

    def _z_only_rows(self, layer: int, patches: dict, p0: int, n_computed: int, n_mlp: int,
                     n_rows: int) -> tuple | None:
        """(layer, first row, dz [rows, T, heads, d_head]) of the rows from ``n_computed`` on, which
        joined ``layer`` with the base run's attention and MLP (a parallel block's MLP reads
        resid_pre) and patch nothing there but z: their resid_pre at the next layer is the base
        run's plus dz W_O (``engine.lowrank_next``). None elsewhere."""
        b = self.n_pairs
        if (self.next_join is None or n_mlp > n_computed or n_computed >= n_rows
                or f"blocks.{layer}.attn.hook_z" not in patches or self._z_last is None):
            return None
        z = self._z_last[n_computed:n_rows]
        other = patched_positions(patches, layer, ("hook_attn_out", "hook_resid_mid",
                                                   "hook_mlp_out"),
                                  p0, n_computed // b, len(z) // b, b, z.shape[1])
        if bool(other.any()):
            return None
        base = self.base[f"blocks.{layer}.attn.hook_z"][:, p0:]
        dz = (z.reshape(-1, b, *z.shape[1:]) - base).reshape(z.shape)
        return layer, n_computed, dz

    def _next_join_applies(self, layer: int, patches: dict, p0: int, z_only) -> bool:
        """Whether the z-only rows of the layer before can take their projections here from
        ``engine.lowrank_next``: nothing patches their resid_pre here."""
        if z_only is None or z_only[0] != layer - 1:
            return False
        _layer, first, dz = z_only
        b = self.n_pairs
        if bool(patched_positions(patches, layer, ("hook_resid_pre",), p0, first // b,
                                  dz.shape[0] // b, b, dz.shape[1]).any()):
            return False
        return self.next_join.usable(layer)

    def _next_join_layer(self, layer: int, x: torch.Tensor, p0: int, patched: Hooks,
                         n_computed: int, n_mlp: int, z_only) -> torch.Tensor:
        """A parallel layer in which rows ``first .. first + len(dz)`` (the z-only rows of the
        layer before) take their query, key/value and MLP-input products from narrow products;
        the other rows as in ``_attention`` and ``_block_rest``."""
        _layer, lo, dz = z_only
        hi, b = lo + dz.shape[0], self.n_pairs
        got = self.next_join(layer, self.base[f"blocks.{layer}.hook_resid_pre"][:, p0:],
                             x[lo:hi], dz, b)
        spans = [(a, e) for a, e in ((0, lo), (lo, hi), (hi, n_computed)) if e > a]
        projected = [(got["q"], got["kv"]) if a == lo else self._project(layer, x[a:e])
                     for a, e in spans]
        q, kv = (torch.cat(t) if len(spans) > 1 else t[0] for t in zip(*projected, strict=True))
        self.query_rows += n_computed * x.shape[1] // b
        z = self._z(layer, None, *self._keys_values(layer, None, p0, patched, kv), p0,
                    patched, q)
        base_z = self._base_z(layer, len(x) - n_computed, p0) if n_computed < len(x) else None
        y = self._attn_out(layer, z, base_z, patched, x)
        # The MLP reads x (resid_pre): the z-only rows from their first products.
        name = f"blocks.{layer}.hook_mlp_out"
        fuse = name not in patched
        norm = self._norms[layer, self.form.mlp_norm]
        outs = []
        for a, e in ((0, lo), (lo, hi), (hi, n_mlp)):
            if e <= a:
                continue
            residual = y[a:e] if fuse else None
            if a == lo and "in" in got:
                outs.append(self._mlp_from_first(layer, got, residual))
            else:
                outs.append(self._mlp_out(layer, norm(x[a:e]), residual))
        if n_mlp < len(x):
            base_out = self._base_act(layer, "hook_mlp_out", len(x) - n_mlp, p0)
            outs.append(y[n_mlp:] + base_out if fuse else base_out)
        out = torch.cat(outs) if len(outs) > 1 else outs[0]
        return out if fuse else y + patched(name, out)

    def _mlp_from_first(self, layer: int, got: dict, residual: torch.Tensor | None):
        """The MLP output (plus ``residual``) from its first products ``got["in"]`` (and
        ``got["gate"]``) before the activation."""
        _w_in, _b_in, _w_gate, _b_gate, w_out, b_out = self._mlp_weights(layer)
        act = ACTS[self._act][1]
        pre = got["in"]
        hidden = pre.mul_(act(got["gate"])) if "gate" in got else act(pre)
        self.mlp_rows += pre.shape[0] * pre.shape[1] // self.n_pairs
        flat = hidden.reshape(-1, hidden.shape[-1])
        shape = (*pre.shape[:-1], w_out.shape[0])
        if residual is None:
            return linear(flat, w_out, b_out).reshape(shape)
        return linear(flat, w_out, b_out,
                      residual=residual.reshape(-1, residual.shape[-1])).reshape(shape)
