"""A layer's MLP input for variants that differ from the base run only in one head's z there.

A variant joining the patched batch at layer ``l`` has the base run's residual stream, and when
its patch there changes only head ``h``'s z (every cell of a head sweep), its attention output
differs from the base run's by ``dz_h W_O[h]``: a rank-``d_head`` update. LayerNorm is a centring
(linear), a per-position scale and an affine map, so the MLP's pre-activation is

    ln2(m + dz_h W_O[h]) W_in + b_in
        = ((m_c gamma) W_in + dz_h M[h]) / sigma + (beta W_in + b_in),
    M[h] = (W_O[h] centred over d_model) diag(gamma) W_in          [d_head, d_mlp]

with ``m`` the base run's resid_mid, ``m_c`` it centred, and ``sigma`` the new residual's
LayerNorm scale (from ``m + dz_h W_O[h]``, cheap). ``(m_c gamma) W_in`` is shared by all such
variants, so each costs two products with ``d_head`` inner size instead of the attention output
projection and the ``d_model``-deep first MLP product. ``M`` is computed once per model and kept
(``engine.dense.keep``); exact up to float rounding, and ``PatchRunner`` checks the sweeps it
serves against the full forward like every other shortcut.
"""

from __future__ import annotations

import torch

from engine.dense import ACTS, keep, linear, pack


def head_mlp_weights(model, layer: int, ln2: torch.nn.LayerNorm) -> torch.Tensor | None:
    """``M`` of ``layer`` as [heads, d_head, d_mlp], kept on the model; None over budget."""
    attn, mlp = model.blocks[layer].attn, model.blocks[layer].mlp
    w_o, w_in = attn.W_O, mlp.W_in
    nbytes = w_o.shape[0] * w_o.shape[1] * w_in.shape[1] * w_o.element_size()

    def make() -> torch.Tensor:
        centred = (w_o - w_o.mean(-1, keepdim=True)) * ln2.weight
        m = centred.reshape(-1, w_o.shape[-1]) @ w_in
        return m.reshape(w_o.shape[0], w_o.shape[1], -1)

    return keep(model, ("head_mlp", layer), (w_o, w_in, ln2.weight), make, nbytes)


def _offset(model, layer: int, ln2: torch.nn.LayerNorm) -> torch.Tensor:
    """beta W_in + b_in: the pre-activation's part that does not depend on the input."""
    mlp = model.blocks[layer].mlp

    def make() -> torch.Tensor:
        offset = torch.zeros_like(mlp.W_in[0])
        if ln2.bias is not None:
            offset = offset + ln2.bias @ mlp.W_in
        return offset if mlp.b_in is None else offset + mlp.b_in

    sources = tuple(t for t in (mlp.W_in, ln2.bias, mlp.b_in) if t is not None)
    kept = keep(model, ("mlp_offset", layer), sources, make, mlp.W_in.shape[1] * 4)
    return make() if kept is None else kept


def one_head_rows(dz: torch.Tensor) -> torch.Tensor | None:
    """For each row of ``dz`` [R, P, heads, d_head], the one head where it is nonzero (0 where
    none is); None if some row changes two heads or more."""
    changed = dz.abs().amax(dim=(1, 3)) > 0  # [R, heads]
    if bool((changed.sum(1) > 1).any()):
        return None
    return changed.to(torch.int8).argmax(1)


def mlp_input_after_head_update(model, layer: int, ln2: torch.nn.LayerNorm, act_fn: str,
                                base_mid: torch.Tensor, dz: torch.Tensor, heads: torch.Tensor,
                                m: torch.Tensor):
    """(resid_mid [R, P, d_model], activated MLP hidden [R * P, d_mlp]) of rows whose resid_mid
    is ``base_mid`` ([B, P, d_model], repeated over the R / B variants) plus ``dz[r, :, h_r]
    W_O[h_r]`` with ``h_r = heads[r]``."""
    attn, mlp = model.blocks[layer].attn, model.blocks[layer].mlp
    delta, pre = _head_products(dz, heads, attn.W_O, m)
    n_pairs, n_pos = base_mid.shape[:2]
    mid = delta.view(-1, n_pairs, n_pos, delta.shape[-1]).add_(base_mid).view_as(delta)
    centred = mid - mid.mean(-1, keepdim=True)
    inv_scale = torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + ln2.eps)
    base_c = (base_mid - base_mid.mean(-1, keepdim=True)) * ln2.weight
    w_in = pack(model, ("mlp_in", layer), (mlp.W_in,), lambda: mlp.W_in.t())
    shared = linear(base_c.reshape(-1, base_c.shape[-1]), w_in, None)  # [B * P, d_mlp]
    pre.view(-1, n_pairs, n_pos, pre.shape[-1]).add_(shared.view(n_pairs, n_pos, -1))
    pre.mul_(inv_scale).add_(_offset(model, layer, ln2))
    return mid, ACTS[act_fn][1](pre.reshape(-1, pre.shape[-1]))


def _head_products(dz: torch.Tensor, heads: torch.Tensor, w_o: torch.Tensor, m: torch.Tensor):
    """(dz_h W_O[h], dz_h M[h]) for each row and its head h, as [R, P, d_model], [R, P, d_mlp]:
    rows sorted by head and, when every head has as many rows, two batched products (the head
    sweeps' case); otherwise a product per head."""
    rows, n_pos = dz.shape[:2]
    order = torch.argsort(heads, stable=True)
    sorted_heads = heads[order]
    used, counts = torch.unique_consecutive(sorted_heads, return_counts=True)
    d_sel = dz[order, :, sorted_heads.long()]  # [R, P, d_head], each row's own head
    if bool((counts == counts[0]).all()):
        every = len(used) == w_o.shape[0]  # all heads, in order: no gather of the weights
        w_o_u = w_o if every else w_o[used.long()]
        m_u = m if every else m[used.long()]
        d_sel = d_sel.reshape(len(used), -1, d_sel.shape[-1])
        delta = torch.bmm(d_sel, w_o_u).reshape(rows, n_pos, -1)
        pre = torch.bmm(d_sel, m_u).reshape(rows, n_pos, -1)
    else:
        delta = dz.new_empty(rows, n_pos, w_o.shape[-1])
        pre = dz.new_empty(rows, n_pos, m.shape[-1])
        start = 0
        for h, c in zip(used.tolist(), counts.tolist(), strict=True):
            delta[start:start + c] = d_sel[start:start + c] @ w_o[h]
            pre[start:start + c] = d_sel[start:start + c] @ m[h]
            start += c
    if bool((order != torch.arange(rows, device=order.device)).any()):
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(rows, device=order.device)
        delta, pre = delta[inverse], pre[inverse]
    return delta, pre
