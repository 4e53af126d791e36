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
"""

from __future__ import annotations

import math

import torch

# hook name suffix -> axis of the query position in the activation (after the batch axis)
POS_AXIS = {
    "hook_resid_pre": 0, "hook_resid_mid": 0, "hook_attn_out": 0, "hook_mlp_out": 0,
    "attn.hook_q": 0, "attn.hook_k": 0, "attn.hook_v": 0, "attn.hook_z": 0,
    "attn.hook_pattern": 1,
}
PREFIX_NAMES = ("attn.hook_k", "attn.hook_v")  # cached from the base run for the prefix


def hook_kind(name: str) -> str | None:
    """``blocks.3.attn.hook_z`` -> ``attn.hook_z``; None for hooks this forward cannot patch."""
    parts = name.split(".", 2)
    if len(parts) < 3 or parts[0] != "blocks":
        return None
    return parts[2] if parts[2] in POS_AXIS else None


def narrow_patch(name: str, mask: torch.Tensor, values: torch.Tensor, p0: int):
    """A full-length patch (mask [V, 1, ...], values [B, ...]) cut to positions >= p0."""
    axis = POS_AXIS[hook_kind(name)]
    n = values.shape[1 + axis] - p0
    values = values.narrow(1 + axis, p0, n)
    if mask.shape[2 + axis] > 1:
        mask = mask.narrow(2 + axis, p0, n)
    return mask, values


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

    def __call__(self, starts: list[int], patches: dict, p0: int, answer_pos: torch.Tensor):
        """Final-position logits [V * B, vocab]; ``starts`` sorted; ``patches[name]`` is a
        function applied to that activation (suffix positions only)."""
        model, b = self.model, self.n_pairs
        n_layers = model.cfg.n_layers

        def patched(name: str, act: torch.Tensor) -> torch.Tensor:
            fn = patches.get(name)
            return fn(act) if fn is not None else act

        x = None
        for layer in range(starts[0], n_layers):
            self.check_cancelled()
            n_new = sum(1 for s in starts if s == layer)
            name = f"blocks.{layer}."
            if n_new:
                fresh = self.base[name + "hook_resid_pre"][:, p0:].repeat(n_new, 1, 1)
                x = fresh if x is None else torch.cat([x, fresh])
            x = patched(name + "hook_resid_pre", x)
            x = x + self._attention(layer, x, p0, patched)
            x = patched(name + "hook_resid_mid", x)
            block = model.blocks[layer]
            x = x + patched(name + "hook_mlp_out", block.mlp(block.ln2(x)))
        n_var = x.shape[0] // b
        rows = torch.arange(x.shape[0], device=x.device)
        x = x[rows, (answer_pos - p0).repeat(n_var)][:, None, :]
        return model.unembed(model.ln_final(x))[:, 0, :]

    def _attention(self, layer: int, x: torch.Tensor, p0: int, patched) -> torch.Tensor:
        attn = self.model.blocks[layer].attn
        name = f"blocks.{layer}.attn."
        h = self.model.blocks[layer].ln1(x)
        n_var = x.shape[0] // self.n_pairs
        q = patched(name + "hook_q", torch.einsum("bpd,hde->bphe", h, attn.W_Q) + attn.b_Q)
        k = patched(name + "hook_k", torch.einsum("bpd,hde->bphe", h, attn.W_K) + attn.b_K)
        v = patched(name + "hook_v", torch.einsum("bpd,hde->bphe", h, attn.W_V) + attn.b_V)
        if p0:
            k = torch.cat([self.base[name + "hook_k"][:, :p0].repeat(n_var, 1, 1, 1), k], dim=1)
            v = torch.cat([self.base[name + "hook_v"][:, :p0].repeat(n_var, 1, 1, 1), v], dim=1)
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / self.scale
        n_q, n_k = q.shape[1], k.shape[1]
        future = torch.ones(n_q, n_k, dtype=torch.bool, device=x.device).triu(p0 + 1)
        scores = scores.masked_fill(future, float("-inf"))
        pattern = patched(name + "hook_pattern", scores.softmax(-1))
        z = patched(name + "hook_z", torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        out = torch.einsum("bqhe,hed->bqd", z, attn.W_O) + attn.b_O
        return patched(f"blocks.{layer}.hook_attn_out", out)
