"""Patched runs that recompute only the positions where they can differ from the base run.

In a causal model, position ``t`` depends only on tokens ``<= t``. Clean and corrupted prompts are
usually the same up to some position ``p0`` (IOI pairs differ in one name), so the base and source
runs are identical before ``p0``, and so is every patched run whose patch values equal the base's
there. Such a run only needs positions ``>= p0``: each layer's attention reads the base run's
cached keys and values for the prefix, and everything else (norms, MLP) is per position. With
``p0 = 0`` it is the whole sequence, still cheaper than the bridge's hooked modules.

This is a hand-written forward for the block forms ``engine.block_form`` describes (sequential or
parallel pre-norm blocks, learned or rotary positions, grouped-query attention, plain or gated
MLPs) from the model's own norm modules and its ``W_Q/W_K/W_V/W_O``, MLP weights and rotary
tables. ``PatchRunner`` checks it per model and prompt shape, with patched variants, against the
hooked full forward and does not use it when they disagree.

More savings, all exact: a variant joins the batch at its first patched layer with the base
run's residual stream, so unless it patches something upstream of z there (resid_pre, q, k, v,
pattern) its attention at that layer is the base run's cached z; in the first layer it computes,
its input differs from the base run's only where it was patched (a block sweep's cell: one
position), so its queries, keys and values are projected there alone and a parallel block's MLP
runs there alone (``_sparse_rows``); in a parallel block, the layer after a variant joined
patching z only projects it through narrow products (``engine.lowrank_next``); and the last
layer, when every pair's answer sits at one position, runs its query, attention output and MLP
at the answer position only. Without rotary positions or grouped keys it also forms no keys or
values there: the query scores the suffix through W_K and pools it before W_V.
"""

from __future__ import annotations

import torch

from engine.block_form import Unsupported, describe
from engine.dense import linear, pack
from engine.fast_norms import fast_norm
from engine.lowrank_join import LowRankJoin
from engine.lowrank_next import NextJoinLayer, NextLayerJoin
from engine.patch_hooks import (
    AFTER_ATTENTION,
    UPSTREAM_OF_MLP,
    UPSTREAM_OF_Z,
    Hooks,
    changed_positions,
    narrow_patch,
    patched_positions,
    where_hook,
)
from engine.suffix_attention import SuffixAttention


def readout(model, x: torch.Tensor) -> torch.Tensor:
    """Logits [rows, vocab] from final residual streams [rows, 1, d_model]: the final norm, the
    unembedding and, where the model soft-caps its logits (Gemma 2), the cap."""
    logits = model.unembed(model.ln_final(x))[:, 0, :]
    cap = float(getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0)
    if cap > 0:
        logits = cap * torch.tanh(logits / cap)
    return logits


class SuffixForward(SuffixAttention, NextJoinLayer):
    """The staircase forward of ``PatchRunner`` over positions ``p0:`` only."""

    def __init__(self, model, base: dict, n_pairs: int, check_cancelled=lambda: None,
                 block_kwargs: dict | None = None) -> None:
        self.model = model
        self.form = form = describe(model)  # Unsupported: the caller uses the bridge's blocks
        self.check_cancelled = check_cancelled
        self._masks: dict[tuple, torch.Tensor] = {}  # causal masks by shape (see _future)
        self.base = base  # the base run's cache: resid_pre, k, v, z of every layer (and more)
        self.n_pairs = n_pairs
        cfg = model.cfg
        self._flat: dict[int, dict] = {}
        self._mlp_w: dict[int, tuple] = {}  # packed MLP weights (see _mlp_weights)
        self._base_proj: dict[int, tuple] = {}  # the base run's q, k/v projections (sparse rows)
        self.query_rows = 0  # variant-positions whose attention was computed (for tests, benches)
        self.mlp_rows = 0  # variant-positions whose MLP was computed (for tests, benches)
        eps = float(getattr(cfg, "eps", 1e-5))
        self._norms = {}
        for i, block in enumerate(model.blocks):
            for name in {"ln1", form.mlp_norm}:
                module = getattr(block, name)
                self._norms[i, name] = fast_norm(module, eps, int(cfg.d_model))
        # Rotary tables (cos, sin) [1, pos, rotary_dim] of each layer, as its block was called.
        self._rot: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._keys_rotated: dict[int, torch.Tensor] = {}
        if form.rotary:
            for layer in range(int(cfg.n_layers)):
                table = (block_kwargs or {}).get(layer, {}).get("position_embeddings")
                if not isinstance(table, tuple) or len(table) != 2 or table[0].shape[0] != 1:
                    raise Unsupported("no rotary tables for the suffix")
                self._rot[layer] = table
        # The last layer's key-free query needs unrotated, ungrouped keys.
        self._pool_keys = not form.rotary and form.n_kv_heads == form.n_heads
        self._act = form.act if form.act and self._fused_mlp_is_exact() else None
        self.lowrank = None
        if self._act:  # (it reads the bridge's norm modules: their weight and form)
            self.lowrank = LowRankJoin(model, form, {(i, "ln2"): getattr(
                block, form.mlp_norm) for i, block in enumerate(model.blocks)})
        self.next_join = None
        if form.parallel:
            self.next_join = NextLayerJoin(model, form, {
                (i, name): getattr(block, name) for i, block in enumerate(model.blocks)
                for name in {"ln1", form.mlp_norm}}, self._weights, self._act is not None)
        self._z_last = None  # the latest computed layer's z after its patch (_z_only_rows)
        self.mlp_rows = 0  # (the probe above counted too)

    def _fused_mlp_is_exact(self) -> bool:
        """Whether the fused MLP (the configured activation) computes what the bridge's MLP
        module does: configs can name another activation than the model runs (TransformerLens
        reports relu for Falcon and BLOOM, whose MLPs use GELU)."""
        mlp = self.model.blocks[0].mlp
        w = self.model.blocks[0].attn.W_Q
        g = torch.Generator(device="cpu").manual_seed(0)
        h = torch.randn(3, 1, w.shape[1], generator=g).to(w.device, w.dtype)
        try:
            want = mlp(h)
            self._act = self.form.act
            got = self._mlp_add(0, h, torch.zeros_like(h), Hooks({}))
        except Exception:  # noqa: BLE001 - any failure: call the module instead
            return False
        tol = 1e-4 * max(1.0, float(want.abs().max()))
        return bool(torch.isfinite(got).all()) and float((got - want).abs().max()) <= tol

    # -- the MLP --------------------------------------------------------------------------------
    def _mlp_add(self, layer: int, h: torch.Tensor, residual: torch.Tensor,
                 patched: Hooks, base_out: torch.Tensor | None = None) -> torch.Tensor:
        """``residual`` plus the block's MLP on the normed input ``h`` (through hook_mlp_out), as
        dense layers with the activation fused into the first and, unless hook_mlp_out is
        patched, the residual add into the last; gated MLPs multiply in their up projection.
        An activation that cannot be fused calls the bridge's MLP module. ``base_out``: the MLP
        output of the rows after ``h``'s (the base run's), which is not computed again."""
        name = f"blocks.{layer}.hook_mlp_out"
        if base_out is not None:
            n = h.shape[0]
            if name in patched or not n:
                out = self._mlp_out(layer, h) if n else None
                out = base_out if out is None else torch.cat([out, base_out])
                return residual + patched(name, out)
            return torch.cat([self._mlp_add(layer, h, residual[:n], patched),
                              residual[n:] + base_out])
        mlp = self.model.blocks[layer].mlp
        act = self._act
        if act is None:
            return residual + patched(name, mlp(h))
        if name in patched:
            return residual + patched(name, self._mlp_out(layer, h))
        return self._mlp_out(layer, h, residual)

    def _mlp_out(self, layer: int, h: torch.Tensor, residual: torch.Tensor | None = None):
        """The MLP's output on the normed ``h``, plus ``residual`` (fused into the last dense
        layer) when given."""
        mlp = self.model.blocks[layer].mlp
        act = self._act
        self.mlp_rows += h.shape[0] * h.shape[1] // self.n_pairs
        if act is None:
            out = mlp(h)
            return out if residual is None else residual + out
        flat_h = h.reshape(-1, h.shape[-1])
        w_in, b_in, w_gate, b_gate, w_out, b_out = self._mlp_weights(layer)
        if self.form.gated:
            hidden = linear(flat_h, w_gate, b_gate, act)
            hidden.mul_(linear(flat_h, w_in, b_in))
        else:
            hidden = linear(flat_h, w_in, b_in, act)
        shape = (*h.shape[:-1], w_out.shape[0])
        if residual is None:
            return linear(hidden, w_out, b_out).reshape(shape)
        return linear(hidden, w_out, b_out, residual=residual.reshape(-1, residual.shape[-1])
                      ).reshape(shape)

    def _mlp_weights(self, layer: int) -> tuple:
        """(W_in, b_in, W_gate, b_gate, W_out, b_out) of the layer's MLP, packed for ``linear``
        (kept: the bridge builds each weight view anew on every access)."""
        got = self._mlp_w.get(layer)
        if got is None:
            mlp, model = self.model.blocks[layer].mlp, self.model
            w_gate = (pack(model, ("mlp_gate", layer), (mlp.W_gate,), lambda: mlp.W_gate.t())
                      if self.form.gated else None)
            got = self._mlp_w[layer] = (
                pack(model, ("mlp_in", layer), (mlp.W_in,), lambda: mlp.W_in.t()), mlp.b_in,
                w_gate, getattr(mlp, "b_gate", None),
                pack(model, ("mlp_out", layer), (mlp.W_out,), lambda: mlp.W_out.t()),
                getattr(mlp, "b_out", None))
        return got

    def _block_rest(self, layer: int, x: torch.Tensor, y: torch.Tensor,
                    patched: Hooks, base_out: torch.Tensor | None = None,
                    joining: tuple = (0, None, 0)) -> torch.Tensor:
        """After the attention: ``y = x + attn_out``. A sequential block runs its MLP on
        ``ln2(y)`` (through hook_resid_mid); a parallel one on the norm of ``x``. ``base_out``:
        the base run's MLP output for the last rows, whose MLP input is the base run's.
        ``joining``: (first row, [rows, pos] mask, p0) of rows that joined here with the base
        run's attention and whose MLP input differs from the base run's only where the mask is
        set: their MLP is computed there only (these rows end where ``base_out``'s begin)."""
        n = len(x) - (0 if base_out is None else len(base_out))
        norm = self._norms[layer, self.form.mlp_norm]
        if self.form.parallel:
            mlp_in = x
        else:
            mlp_in = y = patched(f"blocks.{layer}.hook_resid_mid", y)
        first, changed, p0 = joining
        if changed is not None and self._act is not None:
            n_join = len(changed)
            out = self._base_act(layer, "hook_mlp_out", n_join, p0)  # a copy (repeat)
            out[changed] = self._mlp_out(
                layer, norm(mlp_in[first:first + n_join][changed])[:, None])[:, 0]
            base_out = out if base_out is None else torch.cat([out, base_out])
            n = first
        return self._mlp_add(layer, norm(mlp_in[:n]), y, patched, base_out)

    # -- the whole staircase --------------------------------------------------------------------
    def __call__(self, starts: list[int], patches: dict, p0: int, answer_pos: torch.Tensor,
                 reuse_base_attention: bool = True):
        """Final-position logits [V * B, vocab]; ``starts`` sorted; ``patches[name]`` is the
        (mask, values) of that activation over all positions (cut to ``p0:`` here).

        When every pair's answer is at the same position, the last layer computes its query,
        attention output and MLP at the answer position only (nothing else reaches the logits the
        metric reads)."""
        model, b = self.model, self.n_pairs
        n_layers = model.cfg.n_layers
        hooks = {name: where_hook(*narrow_patch(name, mask, values, p0), b)
                 for name, (mask, values) in patches.items()}
        answer = int(answer_pos[0])
        one_answer = bool((answer_pos == answer).all()) and answer >= p0
        last = {}
        if one_answer:
            last = {name: where_hook(*narrow_patch(name, mask, values, answer, 1), b)
                    for name, (mask, values) in patches.items()
                    if name.startswith(f"blocks.{n_layers - 1}.")}

        patched = Hooks(hooks)
        x = None
        carry = None  # (first row, mask): rows whose input differs from the base's at the mask
        z_only = None  # (layer, first row, dz) of rows that joined a layer patching z only
        for layer in range(starts[0], n_layers):
            self.check_cancelled()
            n_new = sum(1 for s in starts if s == layer)
            name = f"blocks.{layer}."
            n_old = 0 if x is None else x.shape[0]
            if n_new:
                fresh = self.base[name + "hook_resid_pre"][:, p0:].repeat(n_new, 1, 1)
                x = fresh if x is None else torch.cat([x, fresh])
            x = patched(name + "hook_resid_pre", x)
            # Rows joining here have the base run's attention unless they patch something before
            # z here, and their MLP too where its input is the base run's: a parallel block's MLP
            # reads resid_pre, a sequential one's resid_mid. Joining variants that do patch such
            # a thing come first among the new rows (PatchRunner orders them), and attention or
            # the MLP is computed for the rows up to the last of them.
            n_computed = n_mlp = len(x)
            if reuse_base_attention and n_new:
                n_computed = n_old + b * self._joining(patches, layer, n_old // b, n_new,
                                                       UPSTREAM_OF_Z)
                n_mlp = n_old + b * self._joining(
                    patches, layer, n_old // b, n_new,
                    ("hook_resid_pre",) if self.form.parallel else UPSTREAM_OF_MLP)
            if one_answer and layer == n_layers - 1:
                x = self._last_layer(layer, x, p0, answer - p0, patched, Hooks(last),
                                     n_computed, n_mlp)
                return readout(model, x)
            sparse = self._sparse_rows(patches, layer, p0, carry, n_old, n_computed)
            carry = None
            if n_computed < len(x):  # rows with the base run's attention here
                carry = (n_computed, patched_positions(
                    patches, layer, AFTER_ATTENTION, p0, n_computed // b,
                    (len(x) - n_computed) // b, b, x.shape[1]).to(x.device))
            changed, join_first = None, n_computed
            if n_computed < n_mlp and not self.form.parallel:
                changed = changed_positions(patches, layer, p0, n_computed // b,
                                            (n_mlp - n_computed) // b, b, x.shape[1])
            elif sparse is not None and self.form.parallel and sparse[0] < n_mlp:
                # A parallel block's MLP reads resid_pre: the sparse rows' MLP input differs from
                # the base run's at their mask only.
                join_first, changed = sparse[0], sparse[1][:n_mlp - sparse[0]]
            # Joining rows whose z changes at most positions: narrow MLP products at every
            # position (about half an MLP each); at few positions: the MLP there only.
            if ((changed is None or 2 * int(changed.sum()) > changed.numel())
                    and n_computed < n_mlp and self.lowrank is not None
                    and self.lowrank.usable(layer, patches)):
                x = self._narrow_join(layer, x, p0, patched, n_computed, n_mlp)
                continue
            if sparse is None and self._next_join_applies(layer, patches, p0, z_only):
                x = self._next_join_layer(layer, x, p0, patched, n_computed, n_mlp, z_only)
            else:
                y = self._attention(layer, x, p0, patched, n_computed, sparse)
                base_out = (self._base_act(layer, "hook_mlp_out", len(x) - n_mlp, p0)
                            if n_mlp < len(x) else None)
                x = self._block_rest(layer, x, y, patched, base_out, (join_first, changed, p0))
            z_only = self._z_only_rows(layer, patches, p0, n_computed, n_mlp, len(x))
        n_var = x.shape[0] // b
        rows = torch.arange(x.shape[0], device=x.device)
        x = x[rows, (answer_pos - p0).repeat(n_var)][:, None, :]
        return readout(model, x)

    @staticmethod
    def _joining(patches: dict, layer: int, first: int, n_new: int, kinds) -> int:
        """How many of the ``n_new`` variants joining at ``layer`` (from index ``first`` of that
        layer's masks) must be computed: up to the last one patching any of ``kinds`` there."""
        need = 0
        for kind in kinds:
            entry = patches.get(f"blocks.{layer}.{kind}")
            if entry is None:
                continue
            hit = entry[0][first:first + n_new].reshape(n_new, -1).any(1).nonzero()
            if len(hit):
                need = max(need, int(hit[-1]) + 1)
        return need

    def _base_z(self, layer: int, n_rows: int, first: int, length: int | None = None):
        """The base run's z at positions ``first:`` (``length`` of them) for ``n_rows`` rows."""
        return self._base_act(layer, "attn.hook_z", n_rows, first, length)

    def _base_act(self, layer: int, kind: str, n_rows: int, first: int,
                  length: int | None = None):
        """The base run's ``kind`` activation at positions ``first:`` (``length`` of them) for
        ``n_rows`` rows."""
        act = self.base[f"blocks.{layer}.{kind}"]
        act = act.narrow(1, first, act.shape[1] - first if length is None else length)
        return act.repeat(n_rows // self.n_pairs, *([1] * (act.ndim - 1)))

    def _attention(self, layer: int, x: torch.Tensor, p0: int, patched: Hooks,
                   n_computed: int, sparse: tuple | None = None) -> torch.Tensor:
        """``x`` plus the attention output of every row; attention is computed for the first
        ``n_computed`` rows only, the rest (variants that joined at this layer) take the base
        run's z. ``sparse``: see ``_sparse_qkv``."""
        base_z = self._base_z(layer, len(x) - n_computed, p0) if n_computed < len(x) else None
        z = None
        if n_computed and sparse is not None:
            q, kv = self._sparse_qkv(layer, x, n_computed, p0, sparse)
            z = self._z(layer, None, *self._keys_values(layer, None, p0, patched, kv), p0,
                        patched, q)
        elif n_computed:
            h = self._norms[layer, "ln1"](x[:n_computed])
            z = self._z(layer, h, *self._keys_values(layer, h, p0, patched), p0, patched)
        return self._attn_out(layer, z, base_z, patched, x)

    def _sparse_rows(self, patches: dict, layer: int, p0: int, carry, n_old: int,
                     n_computed: int) -> tuple | None:
        """(first row, mask [rows, positions]) for the rows up to ``n_computed`` whose input here
        differs from the base run's resid_pre only at the mask: those that took the base run's
        attention in the layer before (``carry``) and those joining here; None when they are
        few or their masks mostly set (projecting everything is then as cheap)."""
        resid = self.base[f"blocks.{layer}.hook_resid_pre"]
        b, n_pos = self.n_pairs, resid.shape[1] - p0
        first, masks = n_old, []
        if carry is not None and carry[0] < n_old:
            first, mask = carry
            masks.append(mask)
        if first >= n_computed:
            return None
        if n_computed > n_old:
            masks.append(torch.zeros(n_computed - n_old, n_pos, dtype=torch.bool,
                                     device=resid.device))
        mask = torch.cat(masks) if len(masks) > 1 else masks[0]
        mask = mask | patched_positions(patches, layer, ("hook_resid_pre",), p0, first // b,
                                        (n_computed - first) // b, b, n_pos).to(mask.device)
        if 4 * int(mask.sum()) > 3 * mask.numel():
            return None
        return first, mask

    def _narrow_join(self, layer: int, x: torch.Tensor, p0: int, patched: Hooks,
                     n_computed: int, n_mlp: int) -> torch.Tensor:
        """A sequential layer whose only patch up to the MLP is hook_z: attention for the first
        ``n_computed`` rows, the base run's z for the rest; rows up to ``n_mlp`` (joining here,
        their z patched) take their MLP from ``engine.lowrank_join``, the last ones the base
        run's MLP output."""
        w, b = self._weights(layer), self.n_pairs
        name = f"blocks.{layer}."
        z = None
        if n_computed:
            h = self._norms[layer, "ln1"](x[:n_computed])
            z = self._z(layer, h, *self._keys_values(layer, h, p0, patched), p0, patched)
        base_z = self._base_z(layer, len(x) - n_computed, p0)
        z = patched(name + "attn.hook_z", base_z if z is None else torch.cat([z, base_z]))
        base_pairs = self.base[name + "attn.hook_z"][:, p0:]
        joined = z[n_computed:n_mlp]
        dz = (joined.reshape(-1, b, *joined.shape[1:]) - base_pairs).reshape(joined.shape)

        def resid_mid(zz, xx):  # xx + attention output of z
            return linear(zz.reshape(-1, w["d_z"]), w["o"], w["bo"],
                          residual=xx.reshape(-1, xx.shape[-1])).reshape(xx.shape)

        parts = []
        if n_computed:
            y = resid_mid(z[:n_computed], x[:n_computed])
            parts.append(self._mlp_out(layer, self._norms[layer, "ln2"](y), y))
        parts.append(self.lowrank(layer, resid_mid(base_pairs, self.base[
            name + "hook_resid_pre"][:, p0:]), dz, b))
        if n_mlp < len(x):
            parts.append(resid_mid(z[n_mlp:], x[n_mlp:])
                         + self._base_act(layer, "hook_mlp_out", len(x) - n_mlp, p0))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def _last_layer(self, layer: int, x: torch.Tensor, p0: int, a: int, patched: Hooks,
                    at_answer: Hooks, n_computed: int, n_mlp: int):
        """The last block at the answer position only (``a`` relative to ``p0``): [VB, 1, d]."""
        h = self._norms[layer, "ln1"](x[:n_computed])
        base_z = None
        if n_computed < len(x):
            base_z = self._base_z(layer, len(x) - n_computed, p0 + a, 1)

        name = f"blocks.{layer}."
        if not n_computed:
            z = None
        elif not self._pool_keys or any(name + kind in at_answer
                                        for kind in ("attn.hook_k", "attn.hook_v")):
            k, v = self._keys_values(layer, h, p0, patched)
            z = self._z(layer, h[:, a:a + 1], k, v, p0 + a, at_answer)
        else:
            z = self._answer_z(layer, h, p0, a, at_answer)
        x_a = x[:, a:a + 1]
        base_out = (self._base_act(layer, "hook_mlp_out", len(x) - n_mlp, p0 + a, 1)
                    if n_mlp < len(x) else None)
        return self._block_rest(layer, x_a, self._attn_out(layer, z, base_z, at_answer, x_a),
                                at_answer, base_out)
