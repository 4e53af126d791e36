"""Patches as the batched patching forwards apply them: which hook kinds they can patch, where
each kind's position axis is, what lies upstream of z and of the MLP, and the hook that writes a
patch into a stack of variants; and the order of variants in a staircase forward."""

from __future__ import annotations

import torch

# hook name suffix -> axis of the query position in the activation (after the batch axis)
POS_AXIS = {
    "hook_resid_pre": 0, "hook_resid_mid": 0, "hook_attn_out": 0, "hook_mlp_out": 0,
    "attn.hook_q": 0, "attn.hook_k": 0, "attn.hook_v": 0, "attn.hook_z": 0,
    "attn.hook_pattern": 1,
}
PREFIX_NAMES = ("attn.hook_k", "attn.hook_v")  # cached from the base run for the prefix
# Also cached: a variant joining the staircase at layer l has the base run's resid_pre there, so
# unless it patches something upstream of z at that layer its attention is the base run's.
# Likewise its MLP, when the MLP's input is the base run's (see ``SuffixForward.__call__``).
BASE_NAMES = PREFIX_NAMES + ("attn.hook_z", "hook_mlp_out")
UPSTREAM_OF_Z = ("hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern")
# In a sequential block the MLP reads resid_mid: the base run's if none of these is patched either.
UPSTREAM_OF_MLP = UPSTREAM_OF_Z + ("attn.hook_z", "hook_attn_out", "hook_resid_mid")


def changed_positions(patches: dict, layer: int, p0: int, first: int, n_var: int,
                      n_pairs: int, n_pos: int) -> torch.Tensor | None:
    """[n_var * n_pairs, n_pos] True where the MLP input of variants ``first ..`` of ``layer``'s
    masks (joining there with the base run's resid_pre and attention) differs from the base
    run's: where they patch z or attn_out at this layer (positions ``p0:``). None when their
    resid_mid is patched here (then any position may differ)."""
    kinds = ("attn.hook_z", "hook_attn_out")
    if f"blocks.{layer}.hook_resid_mid" in patches or not any(
            f"blocks.{layer}.{kind}" in patches for kind in kinds):
        return None
    return patched_positions(patches, layer, kinds, p0, first, n_var, n_pairs, n_pos)


# What a layer writes into the residual stream of a variant joining it with the base run's
# attention: its output differs from the base run's only where these are patched (the MLP is per
# position). See ``SuffixForward.__call__``.
AFTER_ATTENTION = ("attn.hook_z", "hook_attn_out", "hook_resid_mid", "hook_mlp_out")


def patched_positions(patches: dict, layer: int, kinds, p0: int, first: int, n_var: int,
                      n_pairs: int, n_pos: int) -> torch.Tensor:
    """[n_var * n_pairs, n_pos] True at the positions (from ``p0``) where variants ``first ..``
    of ``layer``'s masks patch any of ``kinds`` (hooks with a leading position axis) there."""
    out = torch.zeros(n_var, n_pos, dtype=torch.bool)
    for kind in kinds:
        entry = patches.get(f"blocks.{layer}.{kind}")
        if entry is None:
            continue
        mask = entry[0][first:first + n_var]  # [n_var, 1, pos or 1, ...]
        if mask.shape[2] > 1:
            mask = mask.narrow(2, p0, n_pos)
        out = out.to(mask.device) | mask.reshape(*mask.shape[:3], -1).any(-1)[:, 0]
    return out.repeat_interleave(n_pairs, dim=0)


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
    """Replace masked entries of the stacked activation [V*B, ...] with ``values`` [B or 1, ...].
    An activation of fewer rows holds the first variants (the suffix forward computes attention
    only for the variants that need it, which come first)."""
    src = values.unsqueeze(0)
    # Only the variants whose mask is set anywhere are touched (in a staircase, those joining at
    # this layer): the others' rows are neither read nor written.
    hit = mask.reshape(mask.shape[0], -1).any(1).nonzero()[:, 0].tolist()
    first, end = (hit[0], hit[-1] + 1) if hit else (0, 0)

    def hook(act, hook=None):
        # In place, like TransformerLens's patch setters: some bridge hook points (resid_mid) hand
        # out a tensor the block keeps using after the hook, so only an in-place write patches
        # every use of it.
        n_var = min(act.shape[0] // n_pairs, end)
        if n_var <= first:
            return act
        part = act[first * n_pairs:n_var * n_pairs]
        stacked = part.reshape(n_var - first, -1, *act.shape[1:])
        part.copy_(torch.where(mask[first:n_var], src.to(act.dtype), stacked).reshape(part.shape))
        return act

    return hook


class Hooks:
    """Patch hooks by hook name: ``hooks(name, act)`` patches ``act`` if a hook is set there."""

    def __init__(self, table: dict) -> None:
        self.table = table

    def __contains__(self, name: str) -> bool:
        return name in self.table

    def __call__(self, name: str, act: torch.Tensor) -> torch.Tensor:
        fn = self.table.get(name)
        return fn(act) if fn is not None else act


def join_rank(patches: tuple, layer: int) -> int:
    """0 if the patches touch something upstream of z at ``layer``, 1 if upstream of a
    sequential block's MLP, else 2: among variants joining a staircase at one layer, the suffix
    forward computes attention and the MLP only for the first ones (see
    ``SuffixForward.__call__``), so the lower ranks go first."""
    kinds = {hook_kind(p[0]) for p in patches if p[1] == layer}
    if kinds & set(UPSTREAM_OF_Z):
        return 0
    return 1 if kinds & set(UPSTREAM_OF_MLP) else 2


def staircase_order(group: list, starts: list[int]) -> list[int]:
    """Indices of ``group`` (variants with ``.patches``) by start layer, then by join rank."""
    return sorted(range(len(group)), key=lambda i: (starts[i], join_rank(group[i].patches,
                                                                         starts[i])))
