"""What the patching panel writes about a result: metric names, the unpatched baseline, the raw
logit differences behind the normalised metric (with a warning when their gap is small), how
the cells were computed, and how a result's axes map onto heatmap rows and columns."""

from __future__ import annotations

import numpy as np

from widgets.axes import fmt
from widgets.patching_bars import METRICS

METRIC_TEXT = {key: full for key, _short, full in METRICS}
ROW_SHORT = {"resid_pre": "resid", "attn_out": "attn", "mlp_out": "mlp", "head_out": "z",
             "head_q": "q", "head_k": "k", "head_v": "v", "head_pattern": "patt"}
SHORT = {"logit_diff_norm": "normalised logit diff", "logit_diff": "logit diff",
         "prob": "p(answer)", "loss": "loss"}
SWEEP_COMPONENT = {"head_out": "z", "head_out_by_pos": "z", "head_q": "q", "head_k": "k",
                   "head_v": "v", "head_pattern": "pattern", "path": "z", "head_q_by_pos": "q",
                   "head_k_by_pos": "k", "head_v_by_pos": "v", "head_pattern_by_pos": "pattern"}
IDLE = "Run a sweep to see which components carry the answer."


MIN_GAP = 1.0  # logits: below this the normalised metric mostly shows noise


def baseline(result) -> tuple[float, str]:
    """(value, description) of a cell whose patch changes nothing."""
    if (result.labels or {}).get("estimate"):
        return 0.0, "no change"
    if getattr(result, "direction", "denoise") == "noise":
        return float(result.clean_value), "clean run"
    return float(result.corrupted_value), "corrupted run"


def raw_baseline_text(result) -> tuple[str, str]:
    """For the normalised metric: (" (raw logit difference: clean x, corrupted y)", a warning
    when the gap it divides by is small); ("", "") otherwise."""
    raw = (result.labels or {}).get("raw_baselines")
    if result.metric != "logit_diff_norm" or raw is None or not np.all(np.isfinite(raw)):
        return "", ""
    hi, lo = (float(v) for v in raw)
    text = f" (raw logit difference: clean {fmt(hi)}, corrupted {fmt(lo)})"
    warning = ""
    if abs(hi - lo) < MIN_GAP:
        warning = (f"⚠ The clean and corrupted runs differ by only {abs(hi - lo):.3f} in logit "
                   "difference, and the normalised metric divides by that: small changes look "
                   "large. Use pairs whose answer flips, or the raw logit difference.")
    return text, warning


# Short names of how cells were computed (engine.patch_runner.PATHS), for the summary line.
PATH_SHORT = {"base": "copied from the unpatched run", "suffix": "suffix forward over cached "
              "prefix keys/values", "dense": "fused forward", "layers": "start at the patched "
              "layer", "full": "full hooked forward"}


def computed_text(result) -> str:
    """'computed by: suffix forward … (96 cells), copied … (12 cells)'; '' when unknown."""
    counts = (getattr(result, "labels", None) or {}).get("paths") or {}
    parts = [f"{PATH_SHORT.get(k, k)} ({n})" for k, n in counts.items() if n]
    return ("Computed by: " + ", ".join(parts) + ".") if parts else ""


def cell_grid(axes: tuple[str, ...], shape: tuple[int, ...]) -> tuple[list[tuple], str]:
    """Rows of the heatmap as index tuples over every axis but the column axis, and that axis
    (positions, else heads: query heads, or key/value heads for a grouped-query model's k/v)."""
    col_axis = "pos" if "pos" in axes else ("kv_head" if "kv_head" in axes else "head")
    row_axes = [i for i, a in enumerate(axes) if a != col_axis]
    rows = list(np.ndindex(*[shape[i] for i in row_axes]))
    return rows, col_axis
