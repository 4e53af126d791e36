"""Many patched runs in one forward pass, each starting at its earliest patched layer.

A *variant* is one patched run: a set of patches (hook name, layer, selector, source). A chunk of
variants is stacked along the batch axis (variant-major, pair index fastest); each hook replaces
its activation with ``torch.where(mask, source, activation)`` where the mask says which variants
patch which entries. The forward starts at the chunk's earliest patched layer: the base run's cached
``resid_pre`` of that layer is fed straight into the bridge's blocks (nothing below that layer can
change). That shortcut is checked once per runner against the full forward; if a model's blocks
cannot be called on their own exactly, every chunk runs the whole model instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from engine.errors import is_out_of_memory
from engine.jobs import Cancelled, JobContext
from engine.patch_hooks import BASE_NAMES, POS_AXIS, hook_kind, staircase_order, where_hook
from engine.shortcut_check import ShortcutCheck, Variant
from engine.suffix_forward import readout


def chunked(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), max(1, size)):
        yield items[i:i + size]


def _is_cache(obj) -> bool:
    return type(obj).__name__.endswith("Cache")


def _expand(obj, n_pairs: int, times: int, key: str = ""):
    """Repeat batch-shaped tensors in a block's captured arguments for a stacked chunk of
    ``times`` variants (variant-major, pair index fastest). A batch of one broadcasts, except
    ALiBi biases ([batch * heads, 1, pos], used by ``baddbmm``) and attention masks, which must
    match exactly."""
    if isinstance(obj, torch.Tensor):
        if times > 1 and key == "alibi" and obj.ndim == 3 and obj.shape[0] % n_pairs == 0:
            return obj.repeat(times, 1, 1)
        if times > 1 and key in ("attention_mask", "") and obj.ndim == 4 \
                and obj.shape[0] == n_pairs and obj.shape[1] == 1:
            return obj.repeat(times, 1, 1, 1)  # a mask: some blocks (XGLM) check its batch
        if times > 1 and obj.ndim >= 2 and obj.shape[0] == n_pairs and n_pairs > 1:
            return obj.repeat(times, *([1] * (obj.ndim - 1)))
        return obj
    if isinstance(obj, tuple):
        return tuple(_expand(o, n_pairs, times, key) for o in obj)
    if isinstance(obj, list):
        return [_expand(o, n_pairs, times, key) for o in obj]
    return obj


def _block_inputs(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """A block's captured call without its hidden state and without KV caches."""
    args = tuple(None if _is_cache(a) else a for a in args[1:])
    kwargs = {k: (None if _is_cache(v) else v) for k, v in kwargs.items()}
    if "use_cache" in kwargs:
        kwargs["use_cache"] = False
    return args, kwargs


# How a variant's value was computed (SweepResult.path and the panels' status lines).
PATHS = {
    "base": "equal to the unpatched run (the patch writes that run's own values): no forward",
    "suffix": "batched from the patched layer on, recomputing only the positions after the "
              "prompts' first difference (prefix keys and values cached)",
    "dense": "batched from the patched layer on through fused dense layers for this block form "
             "(every position)",
    "layers": "batched from the patched layer on (cached residual stream below it)",
    "full": "full hooked forward (TransformerLens's run_with_hooks), batched",
}


class PatchRunner(ShortcutCheck):
    """Caches of the base and source runs, and the stacked patched forward."""

    def __init__(self, host, pairs, direction: str, hook_names: Iterable[str], metric,
                 ctx: JobContext, start_at_layer: bool = True, extra_sources: dict | None = None):
        if direction not in ("denoise", "noise"):
            raise ValueError(f"direction must be 'denoise' or 'noise', not {direction!r}")
        self.model = model = host.model
        self.ctx = ctx
        self.pairs = pairs
        self.metric = metric
        self.n_layers = int(model.cfg.n_layers)
        self.n_pairs, self.n_pos = (int(s) for s in pairs.clean.shape)
        base_toks, src_toks = ((pairs.corrupted, pairs.clean) if direction == "denoise"
                               else (pairs.clean, pairs.corrupted))
        self.base_tokens = base_toks
        self.names = names = set(hook_names)
        resid = {f"blocks.{layer}.hook_resid_pre" for layer in range(self.n_layers)}
        if start_at_layer:  # the suffix forward reads the prefix's keys and values
            resid |= {f"blocks.{layer}.{kind}" for layer in range(self.n_layers)
                      for kind in BASE_NAMES}
        src_logits, src_cache = model.run_with_cache(src_toks, names_filter=lambda n: n in names)
        ctx.check_cancelled()
        captured: dict[int, tuple] = {}

        def grabber(layer: int):
            def grab(module, args, kwargs):
                captured[layer] = (args, kwargs)
            return grab

        handles = [block.register_forward_pre_hook(grabber(i), with_kwargs=True)
                   for i, block in enumerate(model.blocks)]
        try:
            base_logits, base_cache = model.run_with_cache(
                base_toks, names_filter=lambda n: n in names or n in resid)
        finally:
            for handle in handles:
                handle.remove()
        ctx.check_cancelled()
        self.sources = {"source": {n: src_cache[n] for n in names}}
        for key, values in (extra_sources or {}).items():
            self.sources[key] = values
        self.base = {n: base_cache[n] for n in names | resid}
        # Each block's own arguments (masks, rotary tables, ALiBi biases): layers may differ
        # (sliding-window and global layers alternate in Gemma 2).
        self._block_inputs = {layer: _block_inputs(*captured.get(layer, ((), {})))
                              for layer in range(self.n_layers)}
        rows = torch.arange(self.n_pairs, device=base_toks.device)
        self._pos = pairs.positions
        clean_final, corr_final = ((src_logits, base_logits) if direction == "denoise"
                                   else (base_logits, src_logits))
        metric.set_baselines(clean_final[rows, self._pos], corr_final[rows, self._pos])
        self.base_final = base_logits[rows, self._pos]
        self._first_diff: dict[tuple[str, str], int] = {}
        self.suffix = None
        self.paths: dict[str, int] = {}  # how many variants took each path (see PATHS)
        self.fallback = ""  # why the shortcuts were abandoned mid-job, if they were
        self.forwards = 0
        self.positions_computed = 0  # variant-positions run through the blocks (for benchmarks)
        self.start_at_layer = False
        if start_at_layer:
            self._choose_shortcuts(host)

    # -- sizes ------------------------------------------------------------------------------------
    def act_size(self, name: str, dim: int) -> int:
        return int(self.base[name].shape[1 + dim])

    def chunk_size(self, budget_mb: int, max_tokens: int, patterns: bool = True) -> int:
        """Variants per forward so one chunk's activations stay within the memory budget.
        ``patterns``: whether a layer's attention patterns exist as tensors (the bridge's blocks,
        or a patched pattern); the suffix forward's fused attention keeps them inside the
        kernel, and then the activations alone bound the chunk."""
        cfg = self.model.cfg
        t, b = self.n_pos, self.n_pairs
        el = torch.finfo(self.base_final.dtype).bits // 8
        d_mlp = int(getattr(cfg, "d_mlp", 0) or 4 * cfg.d_model)
        per_token = 16 * cfg.d_model + 3 * d_mlp
        square = 8 * cfg.n_heads * t * t if patterns or self.suffix is None else 0
        per_variant = el * b * (t * per_token + square)
        by_memory = int(budget_mb * 2**20 // max(per_variant, 1))
        by_tokens = max_tokens // max(b * t, 1)
        return max(1, min(by_memory, by_tokens, 1024))

    # -- running ----------------------------------------------------------------------------------
    def first_diff(self, name: str, source: str) -> int:
        """The first position where a patch source differs from the base run (n_pos: nowhere)."""
        key = (name, source)
        if key not in self._first_diff:
            kind = hook_kind(name)
            if kind is None:
                self._first_diff[key] = 0
            else:
                axis = 1 + POS_AXIS[kind]
                differs = self.sources[source][name] != self.base[name]
                per_pos = differs.movedim(axis, 0).reshape(differs.shape[axis], -1).any(-1)
                hits = torch.nonzero(per_pos)
                self._first_diff[key] = int(hits[0]) if len(hits) else int(per_pos.shape[0])
        return self._first_diff[key]

    def _forward_from(self, starts: list[int], hooks: list) -> torch.Tensor:
        """Final-position logits [V * B, vocab] of stacked variants sorted by start layer.

        A staircase: a variant joins the batch at its own start layer with the base run's cached
        ``resid_pre`` there, so each block runs only the variants that can differ from the base.
        """
        model, b = self.model, self.n_pairs
        x = None
        with model.hooks(fwd_hooks=hooks):
            for layer in range(starts[0], self.n_layers):
                self.ctx.check_cancelled()
                n_new = sum(1 for s in starts if s == layer)
                if n_new:
                    fresh = self.base[f"blocks.{layer}.hook_resid_pre"].repeat(n_new, 1, 1)
                    x = fresh if x is None else torch.cat([x, fresh])
                n_var = x.shape[0] // b
                block_args, block_kwargs = self._block_inputs[layer]
                args = _expand(block_args, b, n_var)
                kwargs = {k: _expand(v, b, n_var, k) for k, v in block_kwargs.items()}
                out = model.blocks[layer](x, *args, **kwargs)
                x = out[0] if isinstance(out, tuple) else out
        rows = torch.arange(x.shape[0], device=x.device)
        x = x[rows, self._pos.repeat(len(starts))][:, None, :]
        return readout(model, x)

    def _forward_full(self, n_variants: int, hooks: list) -> torch.Tensor:
        toks = self.base_tokens.repeat(n_variants, 1)
        with self.model.hooks(fwd_hooks=hooks):
            logits = self.model(toks, return_type="logits")
        rows = torch.arange(toks.shape[0], device=toks.device)
        return logits[rows, self._pos.repeat(n_variants)]

    def _hooks(self, group: list[Variant], active: dict[int, int] | None) -> list:
        """TransformerLens hooks for :meth:`_masks`."""
        return [(name, where_hook(mask, values, self.n_pairs))
                for name, _source, mask, values in self._masks(group, active)]

    def _masks(self, group: list[Variant], active: dict[int, int] | None) -> list:
        """One (name, source, mask, values) per (hook name, source); the [V, 1, ...] mask says
        what each variant patches.

        ``active[layer]`` is how many variants are in the batch at that layer (staircase), or
        None when every variant runs every layer.
        """
        by_name: dict[tuple[str, str], list[tuple[int, tuple]]] = {}
        layers: dict[str, int] = {}
        for v_idx, variant in enumerate(group):
            for patch in variant.patches:
                name, layer, sel = patch[:3]
                source = patch[3] if len(patch) > 3 else "source"
                by_name.setdefault((name, source), []).append((v_idx, sel))
                layers[name] = layer
        hooks = []
        for (name, source), entries in by_name.items():
            n_var = len(group) if active is None else active[layers[name]]
            shape = self.base[name].shape[1:]
            reduced = [all(_full(sel[d]) for _, sel in entries) for d in range(len(shape))]
            dims = [1 if r else int(s) for r, s in zip(reduced, shape, strict=True)]
            mask = torch.zeros([n_var, 1, *dims], dtype=torch.bool, device=self.base_final.device)
            for v_idx, sel in entries:
                m = torch.ones([1] * len(dims), dtype=torch.bool, device=mask.device)
                for d, size in enumerate(dims):
                    axis = torch.zeros(size, dtype=torch.bool, device=mask.device)
                    axis[slice(None) if reduced[d] else sel[d]] = True
                    m = m & axis.reshape([size if i == d else 1 for i in range(len(dims))])
                mask[v_idx, 0] |= m
            hooks.append((name, source, mask, self.sources[source][name]))
        return hooks

    def run(self, group: list[Variant]) -> torch.Tensor:
        """The metric [V] for each variant of ``group``, in order."""
        self.ctx.check_cancelled()
        starts = [min((p[1] for p in v.patches), default=self.n_layers) for v in group]
        self.forwards += 1
        # Embedding patches (layer -1) or unpatched variants need the whole model.
        if not (self.start_at_layer and min(starts) >= 0 and max(starts) < self.n_layers):
            return self._run_full(group)
        try:
            return self._run_shortcuts(group, starts)
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - a shortcut failing here must not end the job
            if is_out_of_memory(exc):
                raise
            # The per-model check passed but this chunk's shapes broke a shortcut: stop using
            # them for this runner and compute the chunk exactly.
            self.start_at_layer, self.suffix = False, None
            self.fallback = f"{type(exc).__name__}: {exc}"
            return self._run_full(group)

    def _run_full(self, group: list[Variant]) -> torch.Tensor:
        self.positions_computed += len(group) * self.n_pos
        self.paths["full"] = self.paths.get("full", 0) + len(group)
        return self.metric(self._forward_full(len(group), self._hooks(group, None)))

    def _run_shortcuts(self, group: list[Variant], starts: list[int]) -> torch.Tensor:
        base_value = self.metric(self.base_final)
        out = base_value.new_empty(len(group))
        # Variants that can only change positions >= p run over those positions alone, so a
        # sweep by position (patch position p: positions p.. from its layer on) costs about half;
        # a variant that changes nothing the answer can see is the base run itself.
        for p_start, members in self._by_start_position(group):
            index = torch.tensor(members, device=out.device)
            if p_start is None:
                out[index] = base_value
                self.paths["base"] = self.paths.get("base", 0) + len(members)
                continue
            out[index] = self._run_staircase([group[i] for i in members],
                                             [starts[i] for i in members], p_start)
        return out

    def path_summary(self) -> str:
        """How this runner's variants were computed, for a status line."""
        parts = [f"{n} {'cell' if n == 1 else 'cells'} {PATHS[k]}"
                 for k, n in self.paths.items() if n]
        text = "; ".join(parts)
        if self.fallback:
            text += f" (a shortcut failed, so the rest ran in full: {self.fallback[:200]})"
        return text

    def _by_start_position(self, group: list[Variant]) -> list[tuple[int | None, list[int]]]:
        """Variants grouped by the first position their patches can change (0 when the suffix
        forward cannot be used; None when they change nothing at or before the answer), as
        (position, indices into ``group``)."""
        answer, last_answer = int(self._pos.min()), int(self._pos.max())
        buckets: dict[int | None, list[int]] = {}
        for i, variant in enumerate(group):
            start = self._variant_start(variant)
            key = None if start > last_answer else min(start, answer)
            if self.suffix is None and key is not None:
                key = 0
            buckets.setdefault(key, []).append(i)
        out = [(None, buckets.pop(None))] if None in buckets else []
        # Merge neighbouring starts until a forward has enough rows: small batches waste more on
        # per-call overhead and slower small matrix products than they save in positions.
        for start in sorted(buckets):
            if out and out[-1][0] is not None and self._rows(out[-1]) < self.min_rows:
                out[-1][1].extend(buckets[start])
            else:
                out.append((start, list(buckets[start])))
        return out

    min_rows = 1024  # variant-positions per forward below which neighbouring starts are merged

    def in_run_order(self, variants: list) -> list:
        """``variants`` reordered (stably) by the first position they can change, so that each
        chunk holds many variants per start position: :meth:`_by_start_position` then merges
        fewer neighbouring starts, each of which would recompute the positions before a
        variant's own start. Results are keyed, so the order does not change them."""
        if self.suffix is None:
            return list(variants)
        starts = []
        for i, variant in enumerate(variants):
            if i % 4096 == 0:  # a head x position sweep of a long prompt has 100k+ variants
                self.ctx.check_cancelled()
            starts.append(min(self._variant_start(variant), self.n_pos))
        return [variants[i] for i in sorted(range(len(variants)), key=starts.__getitem__)]

    def _rows(self, bucket: tuple[int | None, list[int]]) -> int:
        return len(bucket[1]) * self.n_pairs * (self.n_pos - (bucket[0] or 0))

    def _variant_start(self, variant: Variant) -> int:
        """A position before which this variant's run equals the base run (0: none known;
        n_pos: the patches copy values equal to the base run's, so nothing changes)."""
        first = self.n_pos
        for patch in variant.patches:
            name, _layer, sel = patch[:3]
            kind = hook_kind(name)
            if kind is None:
                return 0
            source = patch[3] if len(patch) > 3 else "source"
            differs_from = self.first_diff(name, source)
            picked = sel[POS_AXIS[kind]]
            if differs_from >= self.n_pos or _max_position(picked, self.n_pos) < differs_from:
                continue  # this patch writes the base run's own values
            first = min(first, max(differs_from, _min_position(picked)))
        return first

    def _run_staircase(self, group: list[Variant], starts: list[int], p_start: int):
        # By start layer; among variants joining at one layer, those that patch something
        # upstream of z there first, then upstream of the MLP: the suffix forward takes the
        # base run's attention and MLP for the rest (see SuffixForward.__call__).
        order = staircase_order(group, starts)
        ordered = [group[i] for i in order]
        s_sorted = [starts[i] for i in order]
        active = {layer: sum(1 for s in s_sorted if s <= layer)
                  for layer in range(self.n_layers)}
        masks = self._masks(ordered, active)
        p0 = self._suffix_start(masks, p_start)
        if p0 >= 0:
            patches = {name: (mask, values) for name, _source, mask, values in masks}
            final = self.suffix(s_sorted, patches, p0, self._pos)
            self.positions_computed += len(group) * (self.n_pos - p0)
            path = "suffix" if p0 > 0 else "dense"
            self.paths[path] = self.paths.get(path, 0) + len(group)
        else:
            final = self._forward_from(s_sorted, [(n, where_hook(m, v, self.n_pairs))
                                                  for n, _s, m, v in masks])
            self.positions_computed += len(group) * self.n_pos
            self.paths["layers"] = self.paths.get("layers", 0) + len(group)
        values = self.metric(final)
        out = torch.empty_like(values)
        out[torch.tensor(order, device=values.device)] = values
        return out

    def _suffix_start(self, masks: list, p_start: int) -> int:
        """Where the suffix forward may start for these patches (-1: it may not be used; 0: it
        runs every position)."""
        if self.suffix is None or not masks or p_start < 0:
            return -1
        names = {name for name, *_ in masks}
        if len(names) != len(masks):  # two sources for one hook: the full path composes them
            return -1
        if any(hook_kind(name) is None for name in names):
            return -1
        return min(p_start, int(self._pos.min()))


def _min_position(sel) -> int:
    """The smallest position a selector entry picks (int, list of ints or a slice)."""
    if isinstance(sel, slice):
        return 0 if sel.start is None else max(0, int(sel.start))
    if isinstance(sel, int):
        return max(0, sel)
    try:
        return max(0, min(int(p) for p in sel))
    except (TypeError, ValueError):
        return 0


def _max_position(sel, n_pos: int) -> int:
    """The largest position a selector entry picks (n_pos - 1 when unsure)."""
    if isinstance(sel, int) and sel >= 0:
        return sel
    if isinstance(sel, (list, tuple)) and sel and all(isinstance(p, int) and p >= 0 for p in sel):
        return max(sel)
    return n_pos - 1


def _full(sel) -> bool:
    return isinstance(sel, slice) and sel == slice(None)
