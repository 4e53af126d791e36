"""What the patching panel's exports hold: the shown heatmap's cells and the plan's bars as plain
rows, and the lines that say what their numbers are (the binding writes the files)."""

from __future__ import annotations

import math

import numpy as np

UNITS = {"logit_diff_norm": "fraction of the clean - corrupted logit difference restored "
                            "(0 = corrupted run, 1 = clean run)",
         "logit_diff": "logits (answer - counterfactual)",
         "prob": "probability of the answer",
         "loss": "nats (-log p of the answer)"}
VIEW_TEXT = {"exact": "exact activation patching", "estimate": "attribution patching estimate "
             "(linear; the change in the metric)", "path": "path patching"}


def number(value: float) -> str:
    return f"{value:.7g}" if math.isfinite(value) else ""


def units(metric: str, estimate: bool = False) -> str:
    text = UNITS.get(metric, metric)
    return f"change in {text}" if estimate else text


def heatmap_what(result) -> str:
    """A figure title's "what": the sweep (or path patching) and the metric."""
    from widgets.patching_bars import SWEEPS

    labels = result.labels or {}
    if result.kind == "path":
        what = f"path patching {labels.get('path', '')}"
    else:
        what = dict(SWEEPS).get(result.kind, result.kind)
        if labels.get("estimate"):
            what = f"attribution estimate, {what}"
    from widgets.patching_text import SHORT

    return f"{what} · {SHORT.get(result.metric, result.metric)}"


def heatmap_about(panel) -> list[tuple[str, str]]:
    """Metric, units, direction, view and baselines of the heatmap's result."""
    r = panel.result
    labels = r.labels or {}
    estimate = bool(labels.get("estimate"))
    view = "path" if r.kind == "path" else ("estimate" if estimate else "exact")
    about = [("view", VIEW_TEXT[view]),
             ("sweep", labels.get("path", "") if r.kind == "path" else r.kind),
             ("metric", r.metric), ("units", units(r.metric, estimate)),
             ("direction", getattr(r, "direction", "")),
             ("clean value", number(float(r.clean_value))),
             ("corrupted value", number(float(r.corrupted_value)))]
    if r.kind == "path":
        about.append(("senders directly to the logits", number(float(labels["direct"]))))
    if not r.complete:
        about.append(("complete", f"no: {r.done} of {r.total} cells computed (empty cells)"))
    how = labels.get("how") or getattr(r, "path", "")
    if how:
        about.append(("computed by", str(how)))
    return about


def heatmap_table(panel) -> tuple[list[str], list[list[str]]]:
    """One row per cell: its index on every axis, its readable label, and its value."""
    r = panel.result
    axes = tuple(r.axes)
    values = np.asarray(r.values, dtype=np.float64)
    comps = (r.labels or {}).get("components", ())
    tokens = tuple(r.clean_tokens)
    header = [*axes, "label", "value"]
    rows = []
    for idx in np.ndindex(values.shape):
        cells = []
        parts = []
        for name, i in zip(axes, idx, strict=True):
            if name == "component":
                comp = str(comps[i]) if i < len(comps) else str(i)
                cells.append(comp)
                parts.append(comp)
            else:
                cells.append(str(i))
                short = {"layer": "L", "head": "H", "kv_head": "KV"}.get(name)
                if short:
                    parts.append(f"{short}{i}")
                elif name == "pos":
                    parts.append(f"pos {i}" + (f" {tokens[i]!r}" if i < len(tokens) else ""))
                else:
                    parts.append(f"{name} {i}")
        rows.append([*cells, " ".join(parts), number(float(values[idx]))])
    return header, rows


def plan_about(result) -> list[tuple[str, str]]:
    return [("view", "patch plan: all items together, then each item alone"),
            ("metric", result.metric), ("units", units(result.metric)),
            ("bars start at", f"the {result.base} run"),
            ("clean value", number(float(result.clean_value))),
            ("corrupted value", number(float(result.corrupted_value))),
            *([("computed by", result.path)] if result.path else [])]


def plan_table(result) -> tuple[list[str], list[list[str]]]:
    return (["bar", "value"],
            [[str(label), number(float(v))] for label, v in zip(result.labels, result.values,
                                                                 strict=True)])
