"""The patching panel's two tool bars: what to sweep (top) and what the heatmap shows (above it).

They replace rows of wide buttons that pushed the panel to 1771 px: short combo texts with the
full description in each item's tooltip, flat tool buttons, and room at the right of the sweep
bar for more options.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QSpinBox,
    QToolButton,
    QWidget,
)

# key, text in the box, full description (the item's tooltip)
METRICS = [("logit_diff_norm", "Logit diff, normalised",
            "Logit difference, normalised"),
           ("logit_diff", "Logit diff", "Logit difference: answer − counterfactual"),
           ("prob", "P(answer)", "Probability of the answer"),
           ("loss", "Loss on answer", "Loss on the answer (−log p)")]
DIRECTIONS = [("denoise", "Denoise: clean → corrupted",
               "Denoising patches clean activations into the corrupted run: what restores the "
               "answer."),
              ("noise", "Noise: corrupted → clean",
               "Noising patches corrupted activations into the clean run: what breaks it.")]
SWEEPS = [("head_out", "Heads (z): layer × head, all positions"),
          ("resid_pre", "Residual stream: layer × position"),
          ("attn_out", "Attention out: layer × position"),
          ("mlp_out", "MLP out: layer × position"),
          ("block", "Block: resid_pre / attn_out / mlp_out × layer × position"),
          ("head_out_by_pos", "Heads (z): layer × head × position"),
          ("head_q", "Head queries: layer × head"), ("head_k", "Head keys: layer × head"),
          ("head_v", "Head values: layer × head"), ("head_pattern", "Head patterns: layer × head"),
          ("head_q_by_pos", "Head queries: layer × head × position"),
          ("head_k_by_pos", "Head keys: layer × head × position"),
          ("head_v_by_pos", "Head values: layer × head × position"),
          ("head_pattern_by_pos", "Head patterns: layer × head × destination position"),
          ("resid_mid", "Residual stream (mid): layer × position")]
VIEWS = [("exact", "Exact patching", "The exact sweep: one patched run per cell"),
         ("estimate", "Attribution estimate",
          "Attribution patching: a linear estimate from one forward and one backward pass"),
         ("path", "Path patching", "Path patching from the sender heads")]
PATH_TIP = ("Path patching from the sender heads into every later head's chosen input, and "
            "directly into the logits. Click a head cell of a head sweep to choose the sender; "
            "Ctrl+click adds or removes more senders.")


def combo(items, min_chars: int, tip: str) -> QComboBox:
    """A combo box with short texts; the popup is as wide as its longest entry."""
    box = QComboBox()
    for key, text, *full in items:
        box.addItem(text, key)
        box.setItemData(box.count() - 1, full[0] if full else text, Qt.ItemDataRole.ToolTipRole)
    box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    box.setMinimumContentsLength(min_chars)
    box.view().setMinimumWidth(box.view().sizeHintForColumn(0) + 24)
    box.setToolTip(tip)
    return box


def tool_button(text: str, tip: str, checkable: bool = False) -> QToolButton:
    b = QToolButton()
    b.setText(text)
    b.setToolTip(tip)
    b.setCheckable(checkable)
    b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
    return b


def bar_layout(widget: QWidget) -> QHBoxLayout:
    lay = QHBoxLayout(widget)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(4)
    return lay


def separator() -> QLabel:
    line = QLabel("|")
    line.setStyleSheet("color: #bbb;")
    return line


class SweepBar(QWidget):
    """Pairs toggle · metric · direction · sweep kind · Run · Cancel · (room) · plan toggle."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.pairs_toggle = tool_button("▾ Pairs", "Show or hide the prompt-pair editor",
                                        checkable=True)
        self.pairs_toggle.setChecked(True)
        self.metric_combo = combo(METRICS, 16, "What a patched run is scored by, at the answer "
                                               "position (hover an entry for its definition).")
        self.direction_combo = combo(DIRECTIONS, 20, "Denoising patches clean activations into "
                                     "the corrupted run (what restores the answer); noising "
                                     "patches corrupted activations into the clean run (what "
                                     "breaks it).")
        self.sweep_combo = combo([(k, t) for k, t in SWEEPS], 24,
                                 "Which components to patch one at a time")
        self.run_button = tool_button("Run sweep", "Patch every component of the chosen kind, one "
                                      "at a time, many per forward pass; the heatmap fills in as "
                                      "it runs.")
        self.run_button.setObjectName("patchingRunButton")
        self.cancel_button = tool_button("Cancel", "Stop the sweep; what has been computed stays "
                                         "on screen.")
        self.cancel_button.setEnabled(False)
        self.plan_toggle = tool_button("Plan ▸", "Show or hide the patch plan (drag components "
                                       "or heatmap cells onto it)", checkable=True)
        self.plan_toggle.setChecked(True)
        self.extra_box = QWidget()  # room for more options (e.g. a BOS toggle)
        self.extra = bar_layout(self.extra_box)
        lay = bar_layout(self)
        lay.addWidget(self.pairs_toggle)
        lay.addWidget(separator())
        lay.addWidget(QLabel("Metric"))
        lay.addWidget(self.metric_combo)
        lay.addWidget(self.direction_combo)
        lay.addWidget(separator())
        lay.addWidget(QLabel("Sweep"))
        lay.addWidget(self.sweep_combo, 1)
        lay.addWidget(self.run_button)
        lay.addWidget(self.cancel_button)
        lay.addWidget(self.extra_box)
        lay.addStretch(0)
        lay.addWidget(self.plan_toggle)


class ResultBar(QWidget):
    """Which result the heatmap shows · Estimate · Verify top-k · Path patch from senders ·
    Export. ``sig_export(what, kind)``: "heatmap" or "plan", as "png", "svg" or "csv"."""

    sig_export = Signal(str, str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.view_combo = combo(VIEWS, 14, "Which result the heatmap shows")
        self.estimate_button = tool_button(
            "Estimate", "Attribution patching: a linear estimate of every cell from one forward "
            "and one backward pass (a fast first screen; compare with the exact sweep)")
        self.top_k = QSpinBox()
        self.top_k.setRange(1, 1000)
        self.top_k.setValue(10)
        self.top_k.setPrefix("top ")
        self.top_k.setToolTip("How many of the estimate's strongest cells to verify exactly")
        self.verify_button = tool_button("Verify", "Patch exactly the k cells with the largest "
                                         "estimated effect")
        self.verify_button.setEnabled(False)
        self.path_button = tool_button("Path patch L0H0", PATH_TIP)
        self.path_input = combo([(c, f"→ {c}", f"into the receivers' {c}") for c in "qkv"], 3,
                                "Which input of the later heads receives the senders' paths")
        lay = bar_layout(self)
        lay.addWidget(QLabel("Show"))
        lay.addWidget(self.view_combo)
        lay.addWidget(separator())
        lay.addWidget(self.estimate_button)
        lay.addWidget(self.top_k)
        lay.addWidget(self.verify_button)
        lay.addWidget(separator())
        lay.addWidget(self.path_button)
        lay.addWidget(self.path_input)
        lay.addStretch(1)
        lay.addWidget(self.export_button())

    def export_button(self) -> QToolButton:
        """One "Export" menu for both results the panel draws (the app writes the files)."""
        button = tool_button("Export", "Save the heatmap or the plan's bars as a picture (PNG, "
                             "SVG) or their numbers (CSV, with the model, prompts, metric and "
                             "units in its first lines)")
        button.setObjectName("patchingExport")
        button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(button)
        for what, label in (("heatmap", "Heatmap"), ("plan", "Plan bars")):
            for kind in ("png", "svg", "csv"):
                action = menu.addAction(f"{label} as {kind.upper()}…")
                action.setObjectName(f"export_{what}_{kind}")
                action.triggered.connect(
                    lambda _checked=False, w=what, k=kind: self.sig_export.emit(w, k))
        button.setMenu(menu)
        self.export_menu = menu
        return button
