"""Patched runs that recompute only the positions where they can differ from the base run.

In a causal model, position ``t`` depends only on tokens ``<= t``. Clean and corrupted prompts are
usually the same up to some position ``p0`` (IOI pairs differ in one name), so the base and source
runs are identical before ``p0``, and so is every patched run whose patch values equal the base's
there. Such a run only needs positions ``>= p0``: each layer's attention reads the base run's
cached keys and values for the prefix, and everything else (LayerNorm, MLP) is per position.

This is a hand-written forward for the standard pre-LN block (GPT-2, and models TransformerLens
maps to the same form): ``x + attn(ln1(x))`` then ``+ mlp(ln2(x))``, the model's own ``ln1``,
``ln2``, ``mlp`` modules and its ``W_Q/W_K/W_V/W_O`` weights. ``PatchRunner`` checks it once per
model and prompt shape against the full forward and does not use it when they disagree (rotary
positions, parallel blocks, soft-capping, grouped keys ...).

Two more savings, both exact: a variant joins the batch at its first patched layer with the base
run's residual stream, so unless it patches something upstream of z there (resid_pre, q, k, v,
pattern) its attention at that layer is the base run's cached z; and the last layer, when every
pair's answer sits at one position, runs its query at that position only, scoring the suffix
through W_K and pooling it before W_V rather than projecting every position to keys and values.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from engine.dense import fusable, linear, pack

# hook name suffix -> axis of the query position in the activation (after the batch axis)
POS_AXIS = {
    "hook_resid_pre": 0, "hook_resid_mid": 0, "hook_attn_out": 0, "hook_mlp_out": 0,
    "attn.hook_q": 0, "attn.hook_k": 0, "attn.hook_v": 0, "attn.hook_z": 0,
    "attn.hook_pattern": 1,
}
PREFIX_NAMES = ("attn.hook_k", "attn.hook_v")  # cached from the base run for the prefix
# Also cached: a variant joining the staircase at layer l has the base run's resid_pre there, so
# unless it patches something upstream of z at that layer its attention is the base run's.
BASE_NAMES = PREFIX_NAMES + ("attn.hook_z",)
UPSTREAM_OF_Z = ("hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern")


def hook_kind(name: str) -> str | None:
    """``blocks.3.attn.hook_z`` -> ``attn.hook_z``; None for hooks this forward cannot patch."""
    parts = name.split(".", 2)
    if len(parts) < 3 or parts[0] != "blocks":
        return None
    return parts[2] if parts[2] in POS_AXIS else None


def narrow_patch(name: str, mask: torch.Tensor, values: torch.Tensor, p0: int,
                 length: int | None = None):
    """A patch (mask [V, 1, ...], values [B, ...]) cut to ``length`` positions from ``p0``
    (default: all positions from ``p0`` on)."""
    axis = POS_AXIS[hook_kind(name)]
    n = values.shape[1 + axis] - p0 if length is None else length
    values = values.narrow(1 + axis, p0, n)
    if mask.shape[2 + axis] > 1:
        mask = mask.narrow(2 + axis, p0, n)
    return mask, values


def where_hook(mask: torch.Tensor, values: torch.Tensor, n_pairs: int):
    """Replace masked entries of the stacked activation [V*B, ...] with ``values`` [B or 1, ...]."""
    src = values.unsqueeze(0)

    def hook(act, hook=None):
        # In place, like TransformerLens's patch setters: some bridge hook points (resid_mid) hand
        # out a tensor the block keeps using after the hook, so only an in-place write patches
        # every use of it.
        stacked = act.reshape(mask.shape[0], -1, *act.shape[1:])
        act.copy_(torch.where(mask, src.to(act.dtype), stacked).reshape(act.shape))
        return act

    return hook


def plain_layer_norm(ln, eps: float) -> torch.nn.LayerNorm | None:
    """The ``nn.LayerNorm`` a TransformerLens norm bridge wraps, when the bridge computes exactly
    it (LayerNorm, not RMS, no weight offset, the same eps); None otherwise. Calling it directly
    is one fused kernel instead of the bridge's seven elementwise passes."""
    inner = getattr(ln, "original_component", None)
    if (type(inner) is not torch.nn.LayerNorm or getattr(ln, "uses_rms_norm", True)
            or getattr(ln, "uses_weight_offset", True) or abs(inner.eps - eps) > 1e-12):
        return None
    return inner


class Hooks:
    """Patch hooks by hook name: ``hooks(name, act)`` patches ``act`` if a hook is set there."""

    def __init__(self, table: dict) -> None:
        self.table = table

    def __contains__(self, name: str) -> bool:
        return name in self.table

    def __call__(self, name: str, act: torch.Tensor) -> torch.Tensor:
        fn = self.table.get(name)
        return fn(act) if fn is not None else act


class SuffixForward:
    """The staircase forward of ``PatchRunner`` over positions ``p0:`` only."""

    def __init__(self, model, base: dict, n_pairs: int, check_cancelled=lambda: None) -> None:
        self.model = model
        self.check_cancelled = check_cancelled
        self.base = base  # the base run's cache: resid_pre, k, v of every layer (and more)
        self.n_pairs = n_pairs
        cfg = model.cfg
        scale = float(getattr(cfg, "attn_scale", -1) or -1)
        self.scale = scale if scale > 0 else math.sqrt(cfg.d_head)
        self._flat: dict[int, dict] = {}
        self.query_rows = 0  # variant-positions whose attention was computed (for tests, benches)
        act = str(getattr(cfg, "act_fn", ""))
        self._act = act if fusable(act) and not getattr(cfg, "gated_mlp", False) else None
        eps = float(getattr(cfg, "eps", 1e-5))
        self._norms = {}
        for i, block in enumerate(model.blocks):
            for name in ("ln1", "ln2"):
                module = getattr(block, name)
                self._norms[i, name] = plain_layer_norm(module, eps) or module

    def _mlp(self, layer: int, x: torch.Tensor, patched: Hooks) -> torch.Tensor:
        """``x`` plus the block's MLP on ln2(x) (through hook_mlp_out). A plain (ungated) MLP runs
        as two dense layers, the activation fused into the first and, unless hook_mlp_out is
        patched, the residual add into the second."""
        block = self.model.blocks[layer]
        name = f"blocks.{layer}.hook_mlp_out"
        h = self._norms[layer, "ln2"](x)
        mlp = block.mlp
        if self._act is None:
            return x + patched(name, mlp(h))
        w_in = pack(self.model, ("mlp_in", layer), (mlp.W_in,), lambda: mlp.W_in.t())
        w_out = pack(self.model, ("mlp_out", layer), (mlp.W_out,), lambda: mlp.W_out.t())
        hidden = linear(h.reshape(-1, h.shape[-1]), w_in, mlp.b_in, self._act)
        if name in patched:
            out = linear(hidden, w_out, mlp.b_out).reshape(x.shape)
            return x + patched(name, out)
        return linear(hidden, w_out, mlp.b_out, residual=x.reshape(-1, x.shape[-1])).reshape(
            x.shape)

    def _weights(self, layer: int) -> dict:
        """The layer's attention weights as plain matrices, so each projection is one dense layer
        over all heads (``F.linear``'s [heads * d_head, d_model]) instead of a batched product
        per head."""
        w = self._flat.get(layer)
        if w is None:
            attn = self.model.blocks[layer].attn
            d = attn.W_Q.shape[1]

            def flat(weight):  # [heads, d_model, d_head] -> [heads * d_head, d_model]
                return weight.permute(0, 2, 1).reshape(-1, d)

            w_q, w_k, w_v, w_o = attn.W_Q, attn.W_K, attn.W_V, attn.W_O
            model = self.model
            w = {"q": pack(model, ("q", layer), (w_q,), lambda: flat(w_q).contiguous()),
                 "bq": attn.b_Q.reshape(-1),
                 "kv": pack(model, ("kv", layer), (w_k, w_v),
                            lambda: torch.cat([flat(w_k), flat(w_v)])),
                 "bkv": torch.cat([attn.b_K.reshape(-1), attn.b_V.reshape(-1)]),
                 "q_heads": tuple(w_q.shape[::2]), "k_heads": tuple(w_k.shape[::2]),
                 "o": pack(model, ("o", layer), (w_o,),
                           lambda: w_o.reshape(-1, w_o.shape[-1]).t().contiguous()),
                 "bo": attn.b_O, "d_z": w_o.shape[0] * w_o.shape[1]}
            self._flat[layer] = w
        return w

    def __call__(self, starts: list[int], patches: dict, p0: int, answer_pos: torch.Tensor,
                 reuse_base_attention: bool = True):
        """Final-position logits [V * B, vocab]; ``starts`` sorted; ``patches[name]`` is the
        (mask, values) of that activation over all positions (cut to ``p0:`` here).

        When every pair's answer is at the same position, the last layer computes its query,
        attention output and MLP at the answer position only (nothing else reaches the logits the
        metric reads), and forms no keys or values unless a patch sets them (``_answer_z``)."""
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
            # Rows joining here have the base run's attention unless a patch comes before z.
            reuse = reuse_base_attention and not any(name + k in hooks for k in UPSTREAM_OF_Z)
            n_computed = n_old if reuse else len(x)
            if one_answer and layer == n_layers - 1:
                x = self._last_layer(layer, x, p0, answer - p0, patched, Hooks(last),
                                     n_computed)
                return model.unembed(model.ln_final(x))[:, 0, :]
            x = self._attention(layer, x, p0, patched, n_computed)
            x = patched(name + "hook_resid_mid", x)
            x = self._mlp(layer, x, patched)
        n_var = x.shape[0] // b
        rows = torch.arange(x.shape[0], device=x.device)
        x = x[rows, (answer_pos - p0).repeat(n_var)][:, None, :]
        return model.unembed(model.ln_final(x))[:, 0, :]

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
        if p0:
            k = torch.cat([self.base[name + "hook_k"][:, :p0].repeat(n_var, 1, 1, 1), k], dim=1)
            v = torch.cat([self.base[name + "hook_v"][:, :p0].repeat(n_var, 1, 1, 1), v], dim=1)
        return k, v

    def _z(self, layer: int, h_q: torch.Tensor, k, v, first_q: int, patched) -> torch.Tensor:
        w = self._weights(layer)
        name = f"blocks.{layer}.attn."
        self.query_rows += h_q.shape[0] * h_q.shape[1] // self.n_pairs
        q = linear(h_q.reshape(-1, h_q.shape[-1]), w["q"], w["bq"])
        q = patched(name + "hook_q", q.reshape(h_q.shape[0], h_q.shape[1], *w["q_heads"]))
        n_q, n_k = q.shape[1], k.shape[1]
        future = torch.ones(n_q, n_k, dtype=torch.bool, device=h_q.device).triu(first_q + 1)
        if name + "hook_pattern" not in patched:  # the fused kernel; the pattern stays inside
            z = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                               v.transpose(1, 2), attn_mask=~future,
                                               scale=1 / self.scale)
            return z.transpose(1, 2)
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / self.scale
        scores = scores.masked_fill(future, float("-inf"))
        pattern = patched(name + "hook_pattern", scores.softmax(-1))
        return torch.einsum("bhqk,bkhe->bqhe", pattern, v)

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
        two projections of every position. Prefix positions use the base run's cached k, v."""
        attn, w = self.model.blocks[layer].attn, self._weights(layer)
        name = f"blocks.{layer}.attn."
        rows = h.shape[0]
        self.query_rows += rows // self.n_pairs
        q = linear(h[:, a], w["q"], w["bq"]).reshape(rows, 1, *w["q_heads"])
        q = at_answer(name + "hook_q", q)[:, 0]  # [R, heads, d_head]
        seen = h[:, :a + 1]  # suffix positions up to the answer
        scores = torch.einsum("rhd,rtd->rht", torch.einsum("rhe,hde->rhd", q, attn.W_K), seen)
        scores = scores + (q * attn.b_K).sum(-1, keepdim=True)
        n_var = rows // self.n_pairs
        if p0:
            k_pre = self.base[name + "hook_k"][:, :p0].repeat(n_var, 1, 1, 1)
            scores = torch.cat([torch.einsum("rhe,rthe->rht", q, k_pre), scores], dim=-1)
        probs = (scores / self.scale).softmax(-1)
        n_k = p0 + h.shape[1]
        pattern = at_answer(name + "hook_pattern",
                            F.pad(probs, (0, n_k - probs.shape[-1]))[:, :, None, :])[:, :, 0]
        p_suffix = pattern[..., p0:p0 + a + 1]
        z = torch.einsum("rhd,hde->rhe", torch.einsum("rht,rtd->rhd", p_suffix, seen), attn.W_V)
        z = z + p_suffix.sum(-1, keepdim=True) * attn.b_V
        if p0:
            v_pre = self.base[name + "hook_v"][:, :p0].repeat(n_var, 1, 1, 1)
            z = z + torch.einsum("rht,rthe->rhe", pattern[..., :p0], v_pre)
        return z[:, None]

    def _base_z(self, layer: int, n_rows: int, first: int, length: int | None = None):
        """The base run's z at positions ``first:`` (``length`` of them) for ``n_rows`` rows."""
        z = self.base[f"blocks.{layer}.attn.hook_z"]
        z = z.narrow(1, first, z.shape[1] - first if length is None else length)
        return z.repeat(n_rows // self.n_pairs, *([1] * (z.ndim - 1)))

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
                    at_answer: Hooks, n_computed: int):
        """The last block at the answer position only (``a`` relative to ``p0``): [VB, 1, d]."""
        h = self._norms[layer, "ln1"](x[:n_computed])
        base_z = None
        if n_computed < len(x):
            base_z = self._base_z(layer, len(x) - n_computed, p0 + a, 1)

        name = f"blocks.{layer}."
        if not n_computed:
            z = None
        elif any(name + kind in at_answer for kind in ("attn.hook_k", "attn.hook_v")):
            k, v = self._keys_values(layer, h, p0, patched)
            z = self._z(layer, h[:, a:a + 1], k, v, p0 + a, at_answer)
        else:
            z = self._answer_z(layer, h, p0, a, at_answer)
        x_a = self._attn_out(layer, z, base_z, at_answer, x[:, a:a + 1])
        x_a = at_answer(name + "hook_resid_mid", x_a)
        return self._mlp(layer, x_a, at_answer)
