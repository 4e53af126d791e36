"""TransformerLens's own functions on the same inputs as the engine, for the tests to compare with.

Prompt pairs that differ at the first token, in the middle, at the last token and in several
places, with one pair and with two, so every shortcut of the patching engine gets exercised.
"""

from __future__ import annotations

import numpy as np
import torch
from transformer_lens import patching as tlp

from engine.patching import Metric, PromptPair, prepare_pairs

BASE = "When John and Mary went, John gave it to"
PAIRS = {
    "first": (PromptPair(BASE, "The John and Mary went, John gave it to", " Mary", " John"),),
    "middle": (PromptPair(BASE, "When John and Mary went, Mary gave it to", " Mary", " John"),),
    "last": (PromptPair(BASE, "When John and Mary went, John gave it the", " Mary", " John"),),
    "several": (PromptPair(BASE, "When John and Mary went, Mary gave it the", " Mary", " John"),),
    "two_pairs": (
        PromptPair(BASE, "When John and Mary went, Mary gave it to", " Mary", " John"),
        PromptPair("When Alice and Bob went, Alice gave it to",
                   "When Alice and Bob went, Bob gave it to", " Bob", " Alice")),
}

TL_SWEEPS = {
    "resid_pre": tlp.get_act_patch_resid_pre,
    "resid_mid": tlp.get_act_patch_resid_mid,
    "attn_out": tlp.get_act_patch_attn_out,
    "mlp_out": tlp.get_act_patch_mlp_out,
    "head_out": tlp.get_act_patch_attn_head_out_all_pos,
    "head_out_by_pos": tlp.get_act_patch_attn_head_out_by_pos,
    "head_q": tlp.get_act_patch_attn_head_q_all_pos,
    "head_k": tlp.get_act_patch_attn_head_k_all_pos,
    "head_v": tlp.get_act_patch_attn_head_v_all_pos,
    "head_pattern": tlp.get_act_patch_attn_head_pattern_all_pos,
    "head_q_by_pos": tlp.get_act_patch_attn_head_q_by_pos,
    "head_k_by_pos": tlp.get_act_patch_attn_head_k_by_pos,
    "head_v_by_pos": tlp.get_act_patch_attn_head_v_by_pos,
    "head_pattern_by_pos": tlp.get_act_patch_attn_head_pattern_by_pos,
    "block": tlp.get_act_patch_block_every,
    "head_every": tlp.get_act_patch_attn_head_all_pos_every,
}


class Runs:
    """The clean and corrupted runs of some pairs, with the engine's metric and baselines."""

    def __init__(self, host, pairs, metric_name: str = "logit_diff_norm",
                 prepend_bos: bool | None = None) -> None:
        self.host = host
        self.pairs = prepare_pairs(host, pairs, prepend_bos)
        self.metric = Metric(metric_name, self.pairs)
        model = host.model
        rows = torch.arange(len(pairs))
        with torch.inference_mode():
            clean_logits, self.clean_cache = model.run_with_cache(self.pairs.clean)
            corr_logits, self.corrupted_cache = model.run_with_cache(self.pairs.corrupted)
        self.metric.set_baselines(clean_logits[rows, self.pairs.positions],
                                  corr_logits[rows, self.pairs.positions])

    def sweep(self, kind: str, direction: str = "denoise", cells=None) -> np.ndarray:
        """``patching.get_act_patch_*`` for ``kind`` with this metric: every cell, or only
        ``cells`` (index tuples in the sweep's axis order; TransformerLens's own ``index_df``
        option), then flat in that order."""
        base, cache = ((self.pairs.corrupted, self.clean_cache) if direction == "denoise"
                       else (self.pairs.clean, self.corrupted_cache))
        kwargs = {}
        if cells is not None:
            import pandas as pd

            names = TL_SWEEPS[kind].keywords["index_axis_names"]
            kwargs = {"index_axis_names": None,
                      "index_df": pd.DataFrame([list(c) for c in cells], columns=list(names))}
        with torch.inference_mode():
            out = TL_SWEEPS[kind](self.host.model, base, cache, self.metric.full_logits_fn(),
                                  **kwargs)
        return out.cpu().numpy()

    def first_difference(self) -> int:
        differs = (self.pairs.clean != self.pairs.corrupted).any(0).nonzero()
        return int(differs[0]) if len(differs) else int(self.pairs.clean.shape[1])


def sample_cells(shape: tuple[int, ...], axes: tuple[str, ...], first_diff: int):
    """A deterministic sample of a sweep's cells: every layer, and at each layer positions 0, the
    prompts' first difference and the last, each with another head (sweeps without positions:
    the first and the last head). Cells before the first difference check the engine's
    no-forward shortcut, the rest its batched paths."""
    sizes = dict(zip(axes, shape, strict=True))
    heads = sizes.get("head", sizes.get("kv_head", 0))
    positions = sorted({0, min(first_diff, sizes.get("pos", 1) - 1), sizes.get("pos", 1) - 1})
    cells = []
    for layer in range(sizes["layer"]):
        if "pos" not in sizes:
            combos = [{"head": h} for h in sorted({0, heads - 1})]
        else:
            combos = [{"pos": p, "head": (layer + i) % max(1, heads)}
                      for i, p in enumerate(positions)]
        for where in combos:
            where["layer"] = layer
            cells.append(tuple(where.get("head" if a == "kv_head" else a) for a in axes))
    return cells


def assert_spread(ref: np.ndarray, what: str = "") -> float:
    """The compared values must differ from each other, or the comparison proves nothing."""
    finite = ref[np.isfinite(ref)]
    scale = float(np.abs(finite).max()) if finite.size else 0.0
    assert finite.size and np.ptp(finite) > 1e-3 * max(scale, 1e-3), \
        f"degenerate {what}: the comparison would prove nothing"
    return scale
