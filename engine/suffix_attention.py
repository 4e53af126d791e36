"""The attention of ``engine.suffix_forward.SuffixForward``: each layer's projections as plain
dense layers over all heads, rotary positions, the base run's cached keys and values for the
prefix, PyTorch's fused attention kernel, and the last layer's key-free query at the answer
position. A mixin: ``SuffixForward`` holds the state it reads (the model, its block form, the
base run's cache, rotary tables)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.block_form import rotate
from engine.dense import count_attention, linear, pack
from engine.patch_hooks import Hooks


def _flat(weight: torch.Tensor) -> torch.Tensor:
    """[heads, d_model, d_head] -> [heads * d_head, d_model] (``F.linear``'s layout)."""
    return weight.permute(0, 2, 1).reshape(-1, weight.shape[1])


def _bias(*biases) -> torch.Tensor | None:
    """Biases of a fused projection, flattened and joined; zeros stand in for a missing one."""
    if all(b is None for b in biases):
        return None
    ref = next(b for b in biases if b is not None)
    return torch.cat([b.reshape(-1) if b is not None else ref.new_zeros(n)
                      for b, n in zip(biases, _bias.sizes, strict=True)])


class SuffixAttention:
    """Attention over positions ``p0:`` for stacked variants (see the module doc)."""

    # -- weights --------------------------------------------------------------------------------
    def _weights(self, layer: int) -> dict:
        """The layer's attention weights as plain matrices, so each projection is one dense layer
        over all heads (``F.linear``'s [heads * d_head, d_model]) instead of a batched product
        per head."""
        w = self._flat.get(layer)
        if w is None:
            attn = self.model.blocks[layer].attn
            w_q, w_k, w_v, w_o = attn.W_Q, attn.W_K, attn.W_V, attn.W_O
            model = self.model
            _bias.sizes = (w_k.shape[0] * w_k.shape[2], w_v.shape[0] * w_v.shape[2])
            w = {"q": pack(model, ("q", layer), (w_q,), lambda: _flat(w_q).contiguous()),
                 "bq": None if attn.b_Q is None else attn.b_Q.reshape(-1),
                 "kv": pack(model, ("kv", layer), (w_k, w_v),
                            lambda: torch.cat([_flat(w_k), _flat(w_v)])),
                 "bkv": _bias(getattr(attn, "b_K", None), getattr(attn, "b_V", None)),
                 "q_heads": tuple(w_q.shape[::2]), "k_heads": tuple(w_k.shape[::2]),
                 "o": pack(model, ("o", layer), (w_o,),
                           lambda: w_o.reshape(-1, w_o.shape[-1]).t().contiguous()),
                 "bo": getattr(attn, "b_O", None), "d_z": w_o.shape[0] * w_o.shape[1]}
            self._flat[layer] = w
        return w

    # -- attention ------------------------------------------------------------------------------
    def _rotary(self, layer: int, t: torch.Tensor, first: int,
                inplace: bool = True) -> torch.Tensor:
        """Rotary positions ``first .. first + len`` on q or k [R, len, heads, d_head] (by
        default overwriting ``t``, a projection no one else reads)."""
        if not self.form.rotary:
            return t
        cos, sin = self._rot[layer]
        n = t.shape[1]
        return rotate(t, cos[:, first:first + n], sin[:, first:first + n], inplace)

    def _prefix(self, layer: int, kind: str, p0: int, n_var: int) -> torch.Tensor:
        """The base run's keys (rotated) or values at positions ``:p0`` for ``n_var`` variants."""
        name = f"blocks.{layer}.attn.hook_{kind}"
        if kind == "k" and self.form.rotary:
            full = self._keys_rotated.get(layer)
            if full is None:
                full = self._keys_rotated[layer] = self._rotary(layer, self.base[name], 0,
                                                                    inplace=False)
        else:
            full = self.base[name]
        return full[:, :p0].repeat(n_var, 1, 1, 1)

    def _keys_values(self, layer: int, h: torch.Tensor | None, p0: int, patched,
                     kv: torch.Tensor | None = None):
        """Keys (rotated) and values of positions ``:p0`` (the base run's) and ``p0:`` (from the
        normed ``h``, or the projections ``kv`` [R, n, 2 * kv width] when given)."""
        w = self._weights(layer)
        name = f"blocks.{layer}.attn."
        if kv is None:
            kv = linear(h.reshape(-1, h.shape[-1]), w["kv"], w["bkv"]).reshape(
                h.shape[0], h.shape[1], -1)
        n_var = kv.shape[0] // self.n_pairs
        k, v = kv.reshape(kv.shape[0], kv.shape[1], 2, *w["k_heads"]).unbind(2)
        if name + "hook_k" in patched:
            k = patched(name + "hook_k", k.contiguous())
        if name + "hook_v" in patched:
            v = patched(name + "hook_v", v.contiguous())
        k = self._rotary(layer, k, p0)
        if p0:
            k = torch.cat([self._prefix(layer, "k", p0, n_var), k], dim=1)
            v = torch.cat([self._prefix(layer, "v", p0, n_var), v], dim=1)
        return k, v

    def _z(self, layer: int, h_q: torch.Tensor | None, k, v, first_q: int, patched,
           q: torch.Tensor | None = None) -> torch.Tensor:
        """z of the queries from the normed ``h_q`` (or their projections ``q`` [R, n, width])
        over keys ``k`` and values ``v``."""
        w = self._weights(layer)
        name = f"blocks.{layer}.attn."
        if q is None:
            self.query_rows += h_q.shape[0] * h_q.shape[1] // self.n_pairs
            q = linear(h_q.reshape(-1, h_q.shape[-1]), w["q"], w["bq"])
            q = q.reshape(h_q.shape[0], h_q.shape[1], -1)
        q = patched(name + "hook_q", q.reshape(q.shape[0], q.shape[1], *w["q_heads"]))
        q = self._rotary(layer, q, first_q)
        n_q, n_k = q.shape[1], k.shape[1]
        # q·k and pattern·v over the keys each query sees (causal)
        count_attention(4 * q.shape[0] * q.shape[2] * q.shape[3]
                        * (n_q * first_q + n_q * (n_q + 1) // 2))
        group = self.form.group
        if name + "hook_pattern" not in patched:  # the fused kernel; the pattern stays inside
            return self._fused_attention(q, k, v, first_q)
        future = self._future(n_q, n_k, first_q, h_q.device)
        if group > 1:
            k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) * self.form.scale
        scores = scores.masked_fill(future, float("-inf"))
        pattern = patched(name + "hook_pattern", scores.softmax(-1))
        return torch.einsum("bhqk,bkhe->bqhe", pattern, v)

    def _future(self, n_q: int, n_k: int, first_q: int, device, seen: bool = False):
        """[n_q, n_k] True where a query (first at ``first_q``) must not look, or with ``seen``
        where it may (kept per shape)."""
        key = (n_q, n_k, first_q, str(device), seen)
        if key not in self._masks:
            future = torch.ones(n_q, n_k, dtype=torch.bool, device=device).triu(first_q + 1)
            self._masks[key] = ~future if seen else future
        return self._masks[key]

    def _sparse_qkv(self, layer: int, x: torch.Tensor, n_rows: int, p0: int, sparse):
        """The query and key/value projections [R, n, width] of rows ``:n_rows`` of ``x``, where
        ``sparse`` = (first row, mask [rows, n]) says that rows from the first one differ from
        the base run's resid_pre only where the mask is set: they are projected there only and
        take the base run's projections elsewhere (positions are independent up to attention).
        """
        first, mask = sparse
        qs, kvs = [], []
        if first:
            q, kv = self._project(layer, x[:first])
            qs.append(q)
            kvs.append(kv)
        base_q, base_kv = self._base_projections(layer)
        n_var = (n_rows - first) // self.n_pairs
        q = base_q[:, p0:].repeat(n_var, 1, 1)
        kv = base_kv[:, p0:].repeat(n_var, 1, 1)
        if bool(mask.any()):
            q[mask], kv[mask] = (t[:, 0] for t in self._project(layer, x[first:n_rows][mask][:, None]))
        qs.append(q)
        kvs.append(kv)
        self.query_rows += (first * x.shape[1] + int(mask.sum())) // self.n_pairs
        return (torch.cat(qs), torch.cat(kvs)) if first else (q, kv)

    def _base_projections(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The query and key/value projections [B, pos, width] of the base run's resid_pre at
        ``layer`` (kept per layer)."""
        got = self._base_proj.get(layer)
        if got is None:
            got = self._base_proj[layer] = self._project(
                layer, self.base[f"blocks.{layer}.hook_resid_pre"])
        return got

    def _project(self, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ln1, then the query and key/value projections [R, n, width] of ``x`` [R, n, d]."""
        w = self._weights(layer)
        h = self._norms[layer, "ln1"](x).reshape(-1, x.shape[-1])
        return (linear(h, w["q"], w["bq"]).reshape(*x.shape[:2], -1),
                linear(h, w["kv"], w["bkv"]).reshape(*x.shape[:2], -1))

    def _fused_attention(self, q, k, v, first_q: int) -> torch.Tensor:
        """z [B, n_q, heads, d_head] from PyTorch's fused attention. When the queries are the
        last ones of the keys and more than half of them, the queries are padded in front to the
        keys' length and the kernel's own causal mode skips the future's blocks (half the work of
        the masked call, and no mask to read); otherwise a cached mask."""
        n_q, n_k = q.shape[1], k.shape[1]
        qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        gqa = self.form.group > 1
        if first_q + n_q == n_k and 2 * n_q > n_k:
            if first_q:
                qt = torch.cat([qt.new_zeros(qt.shape[0], qt.shape[1], first_q, qt.shape[3]),
                                qt], dim=2)
            z = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True,
                                               scale=self.form.scale, enable_gqa=gqa)
            return z[:, :, first_q:].transpose(1, 2)
        seen = self._future(n_q, n_k, first_q, q.device, seen=True)
        z = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=seen, scale=self.form.scale,
                                           enable_gqa=gqa)
        return z.transpose(1, 2)

    def _attn_out(self, layer: int, z: torch.Tensor | None, base_z: torch.Tensor | None,
                  patched: Hooks, x: torch.Tensor) -> torch.Tensor:
        """``x`` plus the attention output: z (computed rows, then the base run's rows) -> hook_z
        -> W_O -> hook_attn_out; the residual add is fused into W_O unless attn_out is patched."""
        w = self._weights(layer)
        if base_z is not None:
            z = base_z if z is None else torch.cat([z, base_z])
        z = self._z_last = patched(f"blocks.{layer}.attn.hook_z", z)
        z = z.reshape(-1, w["d_z"])
        name = f"blocks.{layer}.hook_attn_out"
        if name in patched:
            return x + patched(name, linear(z, w["o"], w["bo"]).reshape(x.shape))
        return linear(z, w["o"], w["bo"], residual=x.reshape(-1, x.shape[-1])).reshape(x.shape)

    def _answer_z(self, layer: int, h: torch.Tensor, p0: int, a: int, at_answer) -> torch.Tensor:
        """z at the answer position [R, 1, heads, d_head] without keys or values for the suffix:
        q.(h W_K + b_K) = (W_K q).h + q.b_K, and sum_t p_t (h_t W_V + b_V) = (sum_t p_t h_t) W_V
        + (sum_t p_t) b_V, so one query costs a few matrix-vector products per head instead of
        two projections of every position. Prefix positions use the base run's cached k, v.
        Only without rotary positions and grouped keys (``_pool_keys``)."""
        attn, w = self.model.blocks[layer].attn, self._weights(layer)
        name = f"blocks.{layer}.attn."
        rows = h.shape[0]
        self.query_rows += rows // self.n_pairs
        q = linear(h[:, a], w["q"], w["bq"]).reshape(rows, 1, *w["q_heads"])
        q = at_answer(name + "hook_q", q)[:, 0]  # [R, heads, d_head]
        seen = h[:, :a + 1]  # suffix positions up to the answer
        scores = torch.einsum("rhd,rtd->rht", torch.einsum("rhe,hde->rhd", q, attn.W_K), seen)
        if attn.b_K is not None:
            scores = scores + (q * attn.b_K).sum(-1, keepdim=True)
        n_var = rows // self.n_pairs
        if p0:
            scores = torch.cat([torch.einsum("rhe,rthe->rht", q, self._prefix(layer, "k", p0,
                                                                             n_var)), scores], -1)
        probs = (scores * self.form.scale).softmax(-1)
        n_k = p0 + h.shape[1]
        pattern = at_answer(name + "hook_pattern",
                            F.pad(probs, (0, n_k - probs.shape[-1]))[:, :, None, :])[:, :, 0]
        p_suffix = pattern[..., p0:p0 + a + 1]
        z = torch.einsum("rhd,hde->rhe", torch.einsum("rht,rtd->rhd", p_suffix, seen), attn.W_V)
        if attn.b_V is not None:
            z = z + p_suffix.sum(-1, keepdim=True) * attn.b_V
        if p0:
            z = z + torch.einsum("rht,rthe->rhe", pattern[..., :p0],
                                 self._prefix(layer, "v", p0, n_var))
        return z[:, None]
