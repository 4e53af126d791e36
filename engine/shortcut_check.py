"""The exactness check behind PatchRunner's shortcuts (start at a layer, the suffix forward).

A shortcut is used only after a few patched variants, covering every hook kind the runner patches
at the first, a middle and the last layer, give the same numbers through it as through the hooked
full forward; the verdict is kept per model for the same prompt shape, hook kinds and first
difference. Mixed into engine.patch_runner.PatchRunner, whose state and forwards it uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.patch_hooks import hook_kind, staircase_order, where_hook
from engine.suffix_forward import SuffixForward

# The check's groups of variants fit this budget (see ShortcutCheck._check_shortcuts).
CHECK_BUDGET_MB = 512
CHECK_MAX_TOKENS = 4096


@dataclass(frozen=True)
class Variant:
    key: int  # where the variant's value goes in the caller's output
    patches: tuple  # ((hook_name, layer, selector tuple over the non-batch dims, [source]), ...)


class ShortcutCheck:
    """Chooses and checks the shortcuts of a PatchRunner (``self`` is the runner)."""

    # -- choosing the shortcuts -------------------------------------------------------------------
    def _choose_shortcuts(self, host) -> None:
        """Use start-at-layer (and the suffix forward) only where a check with patches agrees with
        the hooked full forward. The check runs a few patched variants covering every hook kind
        this runner patches, at the first, a middle and the last layer; its verdict is kept per
        model for the same prompt shape, hook kinds and first difference."""
        variants = self._check_variants()
        kinds = tuple(sorted({_suffix(p[0]) for v in variants for p in v.patches}))
        p_start = self._group_start(variants)
        key = (self.n_pos, self.n_pairs, kinds, p_start)
        known = host.__dict__.setdefault("_patching_shortcuts_exact", {})
        if key not in known:
            known[key] = self._check_shortcuts(variants, p_start)
        layers_ok, suffix = known[key]
        self.start_at_layer = layers_ok
        if layers_ok and suffix:
            self.suffix = self._make_suffix()

    def _make_suffix(self) -> SuffixForward | None:
        try:
            return SuffixForward(self.model, self.base, self.n_pairs,
                                 lambda: self.ctx.check_cancelled(),
                                 {layer: kw for layer, (_a, kw) in self._block_inputs.items()})
        except Exception:  # noqa: BLE001 - a block form the suffix forward cannot build
            return None

    def _check_variants(self) -> list[Variant]:
        """Patched variants for the exactness check: each hook kind this runner patches from the
        source run, whole activations, at the first, a middle and the last of its layers (the
        first kind at all three, the others at one each, in turn), plus one variant patching two
        hooks at once."""
        by_suffix: dict[str, list[tuple[int, str]]] = {}
        for name in sorted(self.names):
            if name in self.base and name in self.sources["source"]:
                by_suffix.setdefault(_suffix(name), []).append((_layer_of(name), name))
        picks: list[tuple[int, str]] = []
        for i, (_suf, entries) in enumerate(sorted(by_suffix.items())):
            entries.sort()
            spots = [0, len(entries) // 2, len(entries) - 1]
            for j in (spots if i == 0 else [spots[i % 3]]):
                if entries[j] not in picks:
                    picks.append(entries[j])
        picks = picks[:12]

        def whole(name: str) -> tuple:
            return tuple(slice(None) for _ in self.base[name].shape[1:])

        variants = [Variant(k, ((name, layer, whole(name)),))
                    for k, (layer, name) in enumerate(picks)]
        if len(picks) >= 2:
            (l1, n1), (l2, n2) = picks[0], picks[-1]
            variants.append(Variant(len(variants), ((n1, l1, whole(n1)), (n2, l2, whole(n2)))))
        return variants

    def _group_start(self, variants: list[Variant]) -> int:
        if not variants:
            return 0
        starts = [self._variant_start(v) for v in variants]
        return max(0, min(min(starts), int(self._pos.min())))

    def _check_shortcuts(self, variants: list[Variant], p_start: int) -> tuple[bool, bool]:
        """(start-at-layer is exact, the suffix forward is exact) for these patched variants.

        The variants run in groups that fit the default chunk budget with their attention
        patterns (the hooked forward forms them): at 1024 tokens one batch of every check variant
        took 2.4 GB over a plain forward, one at a time 0.4 GB. Short prompts check them in one
        batch, a staircase of start layers included."""
        size = max(1, self.chunk_size(CHECK_BUDGET_MB, CHECK_MAX_TOKENS, patterns=True))
        layers_ok = suffix_ok = True
        suffix: list = []  # built once, on the first group that gets that far
        # The narrow-join variants one at a time (see there): at 512 tokens three in one group
        # raised the peak memory by 0.5 GB.
        narrow = self._narrow_join_variants()
        groups = [(variants[i:i + size], p_start) for i in range(0, len(variants), size)]
        groups += [(narrow[i:i + 1], self._group_start(narrow)) for i in range(len(narrow))]
        spots = self._position_variants()
        groups += [(spots[i:i + size], self._group_start(spots[i:i + size]))
                   for i in range(0, len(spots), size)]
        for group, start in groups:
            group_layers, group_suffix = self._check_group(group, start, suffix)
            layers_ok, suffix_ok = layers_ok and group_layers, suffix_ok and group_suffix
            if not layers_ok:
                return False, False
        return layers_ok, suffix_ok

    def _narrow_join_variants(self) -> list[Variant]:
        """hook_z of one head, or of the first and last heads, alone at the first, a middle and
        the last patched layer: as a head sweep patches it. The suffix forward takes its narrow
        MLP path (``engine.lowrank_join``) only at a layer where nothing between z and the MLP's
        output is patched, which the mixed variants above do not give it."""
        entries = sorted((_layer_of(n), n) for n in self.names
                         if _suffix(n) == "attn.hook_z" and n in self.base
                         and n in self.sources["source"])
        if not entries:
            return []
        n_heads = int(self.base[entries[0][1]].shape[2])
        picks = dict.fromkeys([entries[0], entries[len(entries) // 2], entries[-1]])
        heads = [[i % n_heads] if i != 1 else sorted({0, n_heads - 1}) for i in range(3)]
        return [Variant(i, tuple((name, layer, (slice(None), head, slice(None)))
                                 for head in heads[i]))
                for i, (layer, name) in enumerate(picks)]

    def _position_variants(self) -> list[Variant]:
        """One position (the first where the source run differs) of each residual-stream kind
        and z, at the first patched layer: as a block sweep patches them. The suffix forward
        then projects the rows joining there (resid_pre) or a layer later (attn_out, mlp_out,
        ...) at that position only, beside rows projected in full, and a parallel block runs
        its MLP there only (see ``SuffixForward._sparse_rows``); whole activations never do
        that."""
        kinds = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_mid",
                 "attn.hook_z")
        by_kind: dict[str, list[tuple[int, str]]] = {}
        for name in self.names:
            if _suffix(name) in kinds and name in self.base and name in self.sources["source"]:
                by_kind.setdefault(_suffix(name), []).append((_layer_of(name), name))
        variants = []
        for kind in kinds:
            entries = sorted(by_kind.get(kind, []))
            for layer, name in entries[:1]:
                p = self.first_diff(name, "source")
                if p < self.n_pos:
                    sel = (p,) + tuple(slice(None) for _ in self.base[name].shape[2:])
                    variants.append(Variant(len(variants), ((name, layer, sel),)))
        return variants

    def _check_group(self, variants: list[Variant], p_start: int,
                     suffix: list) -> tuple[bool, bool]:
        try:
            want = self._forward_full(len(variants), self._hooks(variants, None)).float()
        except Exception:  # noqa: BLE001 - the hooked forward itself fails: no shortcut
            return False, False
        tol = 1e-4 * max(1.0, float(want.abs().max()))
        if not bool(torch.isfinite(want).all()):
            return False, False
        starts = [min((p[1] for p in v.patches), default=self.n_layers) for v in variants]
        if not variants or min(starts) < 0 or max(starts) >= self.n_layers:
            return False, False

        def agrees(fn) -> bool:
            try:
                got = fn().float()
            except Exception:  # noqa: BLE001 - any failure means: not exact here
                return False
            return (got.shape == want.shape and bool(torch.isfinite(got).all())
                    and float((got - want).abs().max()) <= tol)

        order = staircase_order(variants, starts)  # as PatchRunner orders them
        want = want.reshape(len(variants), self.n_pairs, -1)[order].reshape(-1, want.shape[-1])
        ordered = [variants[i] for i in order]
        s_sorted = [starts[i] for i in order]
        active = {layer: sum(1 for s in s_sorted if s <= layer) for layer in range(self.n_layers)}
        masks = self._masks(ordered, active)
        layers_ok = agrees(lambda: self._forward_from(
            s_sorted, [(n, where_hook(m, v, self.n_pairs)) for n, _s, m, v in masks]))
        if not layers_ok or p_start < 0 or len({n for n, *_ in masks}) != len(masks) \
                or any(hook_kind(n) is None for n, *_ in masks):
            return layers_ok, False
        if not suffix:
            suffix.append(self._make_suffix())
        if suffix[0] is None:
            return layers_ok, False
        patches = {name: (mask, values) for name, _source, mask, values in masks}
        p0 = min(p_start, int(self._pos.min()))
        return layers_ok, agrees(lambda: suffix[0](s_sorted, patches, p0, self._pos))


def _suffix(name: str) -> str:
    """``blocks.3.attn.hook_z`` -> ``attn.hook_z``; other names unchanged."""
    parts = name.split(".", 2)
    return parts[2] if len(parts) == 3 and parts[0] == "blocks" else name


def _layer_of(name: str) -> int:
    parts = name.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" else -1
