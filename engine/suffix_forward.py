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

Two more savings, both exact: a variant joins the batch at its first patched layer with the base
run's residual stream, so unless it patches something upstream of z there (resid_pre, q, k, v,
pattern) its attention at that layer is the base run's cached z; and the last layer, when every
pair's answer sits at one position, runs its query, attention output and MLP at the answer
position only. Without rotary positions or grouped keys it also forms no keys or values there:
the query scores the suffix through W_K and pools it before W_V.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.block_form import Unsupported, describe, rotate
from engine.dense import count_attention, linear, pack
from engine.patch_hooks import (
    UPSTREAM_OF_MLP,
    UPSTREAM_OF_Z,
    Hooks,
    narrow_patch,
    where_hook,
)


def plain_layer_norm(ln, eps: float) -> torch.nn.LayerNorm | None:
    """The ``nn.LayerNorm`` a TransformerLens norm bridge wraps, when the bridge computes exactly
    it (LayerNorm, not RMS, no weight offset, the same eps); None otherwise. Calling it directly
    is one fused kernel instead of the bridge's seven elementwise passes."""
    inner = getattr(ln, "original_component", None)
    if (type(inner) is not torch.nn.LayerNorm or getattr(ln, "uses_rms_norm", True)
            or getattr(ln, "uses_weight_offset", True) or abs(inner.eps - eps) > 1e-12):
        return None
    return inner


def readout(model, x: torch.Tensor) -> torch.Tensor:
    """Logits [rows, vocab] from final residual streams [rows, 1, d_model]: the final norm, the
    unembedding and, where the model soft-caps its logits (Gemma 2), the cap."""
    logits = model.unembed(model.ln_final(x))[:, 0, :]
    cap = float(getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0)
    if cap > 0:
        logits = cap * torch.tanh(logits / cap)
    return logits


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


class SuffixForward:
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
        self.query_rows = 0  # variant-positions whose attention was computed (for tests, benches)
        eps = float(getattr(cfg, "eps", 1e-5))
        self._norms = {}
        for i, block in enumerate(model.blocks):
            for name in {"ln1", form.mlp_norm}:
                module = getattr(block, name)
                self._norms[i, name] = plain_layer_norm(module, eps) or module
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
        if act is None:
            out = mlp(h)
            return out if residual is None else residual + out
        flat_h = h.reshape(-1, h.shape[-1])
        w_in = pack(self.model, ("mlp_in", layer), (mlp.W_in,), lambda: mlp.W_in.t())
        w_out = pack(self.model, ("mlp_out", layer), (mlp.W_out,), lambda: mlp.W_out.t())
        if self.form.gated:
            w_gate = pack(self.model, ("mlp_gate", layer), (mlp.W_gate,), lambda: mlp.W_gate.t())
            hidden = linear(flat_h, w_gate, getattr(mlp, "b_gate", None), act)
            hidden.mul_(linear(flat_h, w_in, mlp.b_in))
        else:
            hidden = linear(flat_h, w_in, mlp.b_in, act)
        b_out = getattr(mlp, "b_out", None)
        shape = (*h.shape[:-1], mlp.W_out.shape[-1])
        if residual is None:
            return linear(hidden, w_out, b_out).reshape(shape)
        return linear(hidden, w_out, b_out, residual=residual.reshape(-1, residual.shape[-1])
                      ).reshape(shape)

    def _block_rest(self, layer: int, x: torch.Tensor, y: torch.Tensor,
                    patched: Hooks, base_out: torch.Tensor | None = None) -> torch.Tensor:
        """After the attention: ``y = x + attn_out``. A sequential block runs its MLP on
        ``ln2(y)`` (through hook_resid_mid); a parallel one on the norm of ``x``. ``base_out``:
        the base run's MLP output for the last rows, whose MLP input is the base run's."""
        n = len(x) - (0 if base_out is None else len(base_out))
        if self.form.parallel:
            h = self._norms[layer, self.form.mlp_norm](x[:n])
            return self._mlp_add(layer, h, y, patched, base_out)
        y = patched(f"blocks.{layer}.hook_resid_mid", y)
        return self._mlp_add(layer, self._norms[layer, "ln2"](y[:n]), y, patched, base_out)

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
            y = self._attention(layer, x, p0, patched, n_computed)
            base_out = (self._base_act(layer, "hook_mlp_out", len(x) - n_mlp, p0)
                        if n_mlp < len(x) else None)
            x = self._block_rest(layer, x, y, patched, base_out)
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

    # -- attention ------------------------------------------------------------------------------
    def _rotary(self, layer: int, t: torch.Tensor, first: int) -> torch.Tensor:
        """Rotary positions ``first .. first + len`` on q or k [R, len, heads, d_head]."""
        if not self.form.rotary:
            return t
        cos, sin = self._rot[layer]
        n = t.shape[1]
        return rotate(t, cos[:, first:first + n], sin[:, first:first + n])

    def _prefix(self, layer: int, kind: str, p0: int, n_var: int) -> torch.Tensor:
        """The base run's keys (rotated) or values at positions ``:p0`` for ``n_var`` variants."""
        name = f"blocks.{layer}.attn.hook_{kind}"
        if kind == "k" and self.form.rotary:
            full = self._keys_rotated.get(layer)
            if full is None:
                full = self._keys_rotated[layer] = self._rotary(layer, self.base[name], 0)
        else:
            full = self.base[name]
        return full[:, :p0].repeat(n_var, 1, 1, 1)

    def _keys_values(self, layer: int, h: torch.Tensor, p0: int, patched):
        w = self._weights(layer)
        name = f"blocks.{layer}.attn."
        n_var = h.shape[0] // self.n_pairs
        kv = linear(h.reshape(-1, h.shape[-1]), w["kv"], w["bkv"])
        k, v = kv.reshape(h.shape[0], h.shape[1], 2, *w["k_heads"]).unbind(2)
        if name + "hook_k" in patched:
            k = patched(name + "hook_k", k.contiguous())
        if name + "hook_v" in patched:
            v = patched(name + "hook_v", v.contiguous())
        k = self._rotary(layer, k, p0)
        if p0:
            k = torch.cat([self._prefix(layer, "k", p0, n_var), k], dim=1)
            v = torch.cat([self._prefix(layer, "v", p0, n_var), v], dim=1)
        return k, v

    def _z(self, layer: int, h_q: torch.Tensor, k, v, first_q: int, patched) -> torch.Tensor:
        w = self._weights(layer)
        name = f"blocks.{layer}.attn."
        self.query_rows += h_q.shape[0] * h_q.shape[1] // self.n_pairs
        q = linear(h_q.reshape(-1, h_q.shape[-1]), w["q"], w["bq"])
        q = patched(name + "hook_q", q.reshape(h_q.shape[0], h_q.shape[1], *w["q_heads"]))
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
        z = patched(f"blocks.{layer}.attn.hook_z", z).reshape(-1, w["d_z"])
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
                   n_computed: int) -> torch.Tensor:
        """``x`` plus the attention output of every row; attention is computed for the first
        ``n_computed`` rows only, the rest (variants that joined at this layer) take the base
        run's z."""
        base_z = self._base_z(layer, len(x) - n_computed, p0) if n_computed < len(x) else None
        h = self._norms[layer, "ln1"](x[:n_computed])
        z = None
        if n_computed:
            z = self._z(layer, h, *self._keys_values(layer, h, p0, patched), p0, patched)
        return self._attn_out(layer, z, base_z, patched, x)

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
