"""The Induction-heads panel: score maps (layers x heads) for every head type, a ranked table,
a threshold, the loss on repeated random tokens, the ablation check and custom detection patterns.

A pure view: it draws an induction-scan result (duck-typed numpy fields), and emits intents:
``sig_scan(settings)``, ``sig_head_clicked(layer, head)``, ``sig_ablate(settings)`` and
``sig_export(kind)``. File writing is the binding's job; ``export_target()`` and ``export_table()``
give it the pyqtgraph item and the numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QSlider,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
    QWidgetAction,
)

from widgets.axes import tidy_plot
from widgets.bar_chart import BarChart
from widgets.heatmap import HeatmapView
from widgets.token_strip import visible

SCORE_TITLES = {
    "induction": "Induction",
    "previous": "Previous token",
    "duplicate": "Duplicate token",
    "current": "Current token",
    "first": "First token (BOS)",
    "custom": "Custom",
}
SCORE_HELP = {
    "induction": "Attention from a token to the token after its earlier copy ([A][B]…[A] → [B]).",
    "previous": "Attention to the token just before (head_detector's previous_token_head).",
    "duplicate": "Attention to earlier copies of the same token (duplicate_token_head).",
    "current": "Attention to the token itself (the diagonal).",
    "first": "Attention to the first token (BOS): a resting place for heads with nothing to do.",
    "custom": "Your own detection pattern (Custom pattern tab).",
}
PRESETS = {
    "Offset k (k tokens back)": None,  # filled from the offset box
    "Same token as mine (duplicate)": "tok(k) == tok(q) and k != q",
    "Token after an earlier copy of mine (induction)": "k >= 1 and tok(k - 1) == tok(q) and k - 1 != q",
    "First token (BOS)": "k == 0",
    "Current token": "k == q",
    "Same token as the one before mine": "k >= 1 and tok(k) == tok(q - 1) and k < q",
}
SOURCES = (("repeated", "Repeated random tokens"), ("prompt", "Your prompt"))
RED = "color: #b00020;"
AMBER = "color: #8a5a00;"
MARK = QColor(255, 255, 255)
SELECTED = QColor(230, 30, 30)


def _label(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


class InductionPanel(QWidget):
    sig_scan = Signal(object)  # dict: seq_len, batch, seed, exclude_bos, ..., custom (dict | None)
    sig_head_clicked = Signal(int, int)  # layer, head
    sig_ablate = Signal(object)  # dict: heads, mode, control_sets, control_seed
    sig_export = Signal(str)  # "png", "svg" or "csv"
    sig_inspect = Signal()  # show the selected head on the repeated sequence (attention panel)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("InductionPanel")
        self._result = None
        self._ablation = None
        self._selected = (-1, -1)
        self._n_ctx = 0
        self._blocks: list[tuple[str, np.ndarray]] = []
        self._marks: set[str] = set()
        self.painted: np.ndarray | None = None
        self._idle_summaries: tuple[str, str] | None = None  # what the panel said before a job
        self._was: tuple[str, str] | None = None
        self._warning = False
        self._build_controls()
        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_scores_tab(), "Head scores")
        self.tabs.addTab(self._build_loss_tab(), "Loss && ablation")
        self.tabs.addTab(self._build_custom_tab(), "Custom pattern")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(self.controls)
        lay.addWidget(self.message)
        lay.addWidget(self.summary)
        lay.addWidget(self.tabs, 1)

    # -- building ----------------------------------------------------------------------------
    def _spin(self, lo: int, hi: int, value: int, tip: str) -> QSpinBox:
        s = QSpinBox()
        s.setRange(lo, hi)
        s.setValue(value)
        s.setToolTip(tip)
        return s

    def _build_controls(self) -> None:
        self.seq_len = self._spin(2, 100_000, 20, "T: length of the random segment r. The test "
                                  "sequence is BOS + r + r, so it needs 2T + 1 ≤ the model's context.")
        self.batch = self._spin(1, 100_000, 10, "How many random sequences to average over.")
        self.seed = self._spin(0, 2**31 - 1, 0, "Random seed of the repeated tokens.")
        self.pool = QComboBox()
        self.pool.addItem("all tokens", "all")
        self.pool.addItem("word tokens", "words")
        self.pool.setToolTip("Draw r from every ordinary token (ARENA's test), or only from tokens "
                             "that are a space and a word (readable in the attention panel).")
        self.use_prompt = QCheckBox("also score my prompt")
        self.use_prompt.setChecked(True)
        self.use_prompt.setToolTip("Also score every head on the current prompt with "
                                   "TransformerLens's head_detector patterns.")
        self.measure = QComboBox()
        self.measure.addItems(["mul", "abs"])
        self.measure.setToolTip("head_detector's error measure. mul: the fraction of a head's "
                                "attention that falls on the pattern's cells. abs: 1 − mean |pattern − "
                                "attention| × length (1 = perfect match). The induction stripe "
                                "score on repeated tokens is always a plain mean of attention.")
        self.exclude_bos = QCheckBox("exclude BOS")
        self.exclude_bos.setToolTip("Ignore attention paid to the first token (detect_head's "
                                    "exclude_bos).")
        self.exclude_current = QCheckBox("exclude current")
        self.exclude_current.setToolTip("Ignore attention a token pays to itself (detect_head's "
                                        "exclude_current_token).")
        self.scan_button = QPushButton("Scan all heads")
        self.scan_button.setObjectName("inductionScanButton")
        self.scan_button.setToolTip("One batched forward pass over the repeated sequences (and "
                                    "your prompt) scores every head.")
        self.scan_button.clicked.connect(self._emit_scan)
        # head_detector's options live in a drop-down, so the row fits a 1366-px-wide screen.
        self.options_button = QToolButton()
        self.options_button.setObjectName("inductionOptions")
        self.options_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.options_button.setToolTip("head_detector's options: the error measure, and whether "
                                       "to ignore attention to BOS or to the token itself")
        options = QWidget()
        form = QFormLayout(options)
        form.setContentsMargins(8, 6, 8, 6)
        form.addRow("measure", self.measure)
        form.addRow(self.exclude_bos)
        form.addRow(self.exclude_current)
        menu = QMenu(self.options_button)
        holder = QWidgetAction(menu)
        holder.setDefaultWidget(options)
        menu.addAction(holder)
        self.options_button.setMenu(menu)
        self.options_menu = menu
        for signal in (self.measure.currentIndexChanged, self.exclude_bos.toggled,
                       self.exclude_current.toggled):
            signal.connect(lambda *_: self._update_options_text())
        self._update_options_text()
        self.controls = QHBoxLayout()
        for text, w in (("T", self.seq_len), ("batch", self.batch), ("seed", self.seed),
                        ("from", self.pool)):
            self.controls.addWidget(QLabel(text))
            self.controls.addWidget(w)
        self.controls.addWidget(self.use_prompt)
        self.controls.addWidget(self.options_button)
        self.controls.addStretch(1)
        self.controls.addWidget(self.scan_button)
        self.message = QLabel()
        self.message.setObjectName("inductionMessage")
        self.message.setStyleSheet(RED)
        self.message.setWordWrap(True)
        self.message.hide()
        self.summary = QLabel("Scan to score every head on repeated random tokens.")
        self.summary.setWordWrap(True)
        self.summary.setObjectName("inductionSummary")

    def _update_options_text(self) -> None:
        parts = [self.measure.currentText()]
        if self.exclude_bos.isChecked():
            parts.append("no BOS")
        if self.exclude_current.isChecked():
            parts.append("no self")
        self.options_button.setText("Options: " + ", ".join(parts) + "  ")
        self.options_button.setMinimumWidth(0)
        self.options_button.setMinimumWidth(self.options_button.sizeHint().width() + 12)

    def _build_scores_tab(self) -> QWidget:
        self.source = QComboBox()
        for key, text in SOURCES:
            self.source.addItem(text, key)
        self.source.setToolTip("Which sequences the maps and the table describe.")
        self.rank_by = QComboBox()
        for key in SCORE_TITLES:
            self.rank_by.addItem(SCORE_TITLES[key], key)
        self.rank_by.setToolTip("The score the table is sorted by and the ablation uses.")
        self.threshold = QSlider(Qt.Orientation.Horizontal)
        self.threshold.setRange(0, 100)
        self.threshold.setValue(50)
        self.threshold.setToolTip("Heads whose score is at or above this are outlined on the maps,"
                                  " bold in the table, and ablated by the causal check.")
        self.threshold_label = QLabel()
        self.threshold_label.setObjectName("inductionThresholdLabel")
        self.export_buttons = {}
        row = QHBoxLayout()
        for text, w in (("scores on", self.source), ("rank by", self.rank_by)):
            row.addWidget(QLabel(text))
            row.addWidget(w)
        row.addWidget(QLabel("threshold"))
        row.addWidget(self.threshold, 1)
        row.addWidget(self.threshold_label)
        self.inspect_button = QToolButton()
        self.inspect_button.setObjectName("inductionInspect")
        self.inspect_button.setText("Attention on repeated ▸")
        self.inspect_button.setToolTip("Add the first repeated random sequence to the attention "
                                       "panel's prompts (your prompt stays there) and show the "
                                       "selected head on it. Also: double-click a head.")
        self.inspect_button.setEnabled(False)
        self.inspect_button.clicked.connect(self.sig_inspect.emit)
        row.addWidget(self.inspect_button)
        for kind in ("png", "svg", "csv"):
            b = QToolButton()
            b.setText(kind.upper())
            b.setToolTip(f"Export the score maps as {kind.upper()}.")
            b.clicked.connect(lambda _=False, k=kind: self.sig_export.emit(k))
            self.export_buttons[kind] = b
            row.addWidget(b)
        self.ceiling_note = QLabel()
        self.ceiling_note.setObjectName("inductionCeilingNote")
        self.ceiling_note.setStyleSheet(AMBER)
        self.ceiling_note.setWordWrap(True)
        self.ceiling_note.hide()
        self.heat = HeatmapView(x_label="head (one block per score)", y_label="layer",
                                colorbar_label="score", aspect_locked=False)
        self.heat.setObjectName("inductionHeatmap")
        self.heat.set_colormap("viridis")
        self.heat.set_tooltip_fn(self._tooltip)
        self.heat.sig_cell_clicked.connect(self._on_cell_clicked)
        self._titles: list[pg.TextItem] = []
        self.table = QTableWidget(0, 0)
        self.table.setObjectName("inductionTable")
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setToolTip("Every head, best first by the 'rank by' score. Click one to select "
                              "it everywhere; double-click to see it on the repeated sequence "
                              "in the attention panel.")
        self.table.cellClicked.connect(self._on_row_clicked)
        self.table.cellDoubleClicked.connect(lambda *_: self.sig_inspect.emit())
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.heat)
        split.addWidget(self.table)
        split.setSizes([700, 320])
        w = QWidget()
        lay = QVBoxLayout(w)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.ceiling_note)
        lay.addWidget(split, 1)
        self.source.currentIndexChanged.connect(self._redraw)
        self.rank_by.currentIndexChanged.connect(self._redraw)
        self.threshold.valueChanged.connect(self._threshold_changed)
        self._update_threshold_label()
        return w

    def _build_loss_tab(self) -> QWidget:
        self.loss_plot = pg.PlotWidget(background="w")
        self.loss_plot.setObjectName("inductionLossPlot")
        self.loss_plot.setLabel("bottom", "position of the predicted token in BOS + r + r")
        self.loss_plot.setLabel("left", "loss (nats)")
        self.loss_plot.showGrid(x=False, y=True, alpha=0.3)
        for name in ("left", "bottom"):
            axis = self.loss_plot.getPlotItem().getAxis(name)
            axis.setPen(pg.mkPen("#444"))
            axis.setTextPen(pg.mkPen("#222"))
        tidy_plot(self.loss_plot.getPlotItem())
        self._loss_values_shown(False)
        self.loss_plot.addLegend(offset=(-10, 10), brush=pg.mkBrush(255, 255, 255, 225),
                                 pen=pg.mkPen("#bbb"), labelTextColor="#222")
        self.loss_plot.setToolTip("Loss predicting each token of the repeated sequence (mean over "
                                  "the batch). Induction makes the second copy cheap to predict.")
        self.ablate_mode = QComboBox()
        self.ablate_mode.addItems(["zero", "mean"])
        self.ablate_mode.setToolTip("zero: the heads write nothing. mean: each head writes its "
                                    "mean output (hook_z) over the clean batch and positions.")
        self.control_sets = self._spin(0, 50, 3, "How many random sets of heads of the same size "
                                       "to ablate as a control.")
        self.control_seed = self._spin(0, 2**31 - 1, 1, "Seed of the random control sets.")
        self.ablate_button = QPushButton("Ablate heads above threshold")
        self.ablate_button.setObjectName("inductionAblateButton")
        self.ablate_button.setToolTip("Ablate the marked heads on hook_z, re-run the repeated "
                                      "sequences, and compare with random control sets.")
        self.ablate_button.clicked.connect(self._emit_ablate)
        self.ablate_heads_label = QLabel("")
        self.ablate_heads_label.setObjectName("inductionAblateHeads")
        self.ablate_heads_label.setWordWrap(True)
        self.ablate_summary = QLabel("Scan, choose a threshold, then ablate the marked heads.")
        self.ablate_summary.setWordWrap(True)
        self.ablate_summary.setObjectName("inductionAblateSummary")
        self.ablate_bars = BarChart("v")
        self.ablate_bars.set_axis_titles("", "loss on the repeated half (nats)")
        row = QHBoxLayout()
        for text, w in (("ablation", self.ablate_mode), ("control sets", self.control_sets),
                        ("control seed", self.control_seed)):
            row.addWidget(QLabel(text))
            row.addWidget(w)
        row.addWidget(self.ablate_button)
        row.addStretch(1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.loss_plot)
        split.addWidget(self.ablate_bars)
        split.setSizes([600, 400])
        w = QWidget()
        lay = QVBoxLayout(w)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.ablate_heads_label)
        lay.addWidget(self.ablate_summary)
        lay.addWidget(split, 1)
        return w

    def _build_custom_tab(self) -> QWidget:
        self.custom_target = QComboBox()
        for key, text in SOURCES:
            self.custom_target.addItem(text, key)
        self.custom_target.setCurrentIndex(1)
        self.custom_target.setToolTip("The sequence the pattern is defined over.")
        self.preset = QComboBox()
        self.preset.addItems(list(PRESETS))
        self.preset.setToolTip("Fill the formula with a common pattern.")
        self.offset = self._spin(0, 4096, 2, "k for 'offset k': attend k tokens back.")
        self.formula = QLineEdit("q - k == 2")
        self.formula.setObjectName("inductionFormula")
        self.formula.setToolTip("1 where a head should attend: a formula over query position q, key "
                                "position k, length n and token ids tok(i). e.g. tok(k) == tok(q) "
                                "and k != q. Cells above the diagonal are dropped.")
        self.use_painted = QCheckBox("use the painted pattern")
        self.use_painted.setToolTip("Scan with the matrix below instead of the formula. Click a "
                                    "cell on or below the diagonal to toggle it; drag to paint.")
        self.custom_button = QPushButton("Scan with this pattern")
        self.custom_button.setObjectName("inductionCustomButton")
        self.custom_button.setToolTip("Score every head against the pattern (head_detector's "
                                      "arithmetic); the result is the Custom map.")
        self.clear_paint = QPushButton("Clear canvas")
        self.clear_paint.setToolTip("Set every cell of the painted pattern to 0.")
        form = QFormLayout()
        form.addRow("pattern over", self.custom_target)
        prow = QHBoxLayout()
        prow.addWidget(self.preset, 1)
        prow.addWidget(QLabel("k ="))
        prow.addWidget(self.offset)
        form.addRow("preset", prow)
        form.addRow("formula", self.formula)
        brow = QHBoxLayout()
        brow.addWidget(self.use_painted)
        brow.addWidget(self.clear_paint)
        brow.addStretch(1)
        brow.addWidget(self.custom_button)
        form.addRow(brow)
        self.canvas = HeatmapView(x_label="key (attended-to token)", y_label="query token",
                                  colorbar_label="target attention")
        self.canvas.setObjectName("inductionCanvas")
        self.canvas.set_colormap("blues")
        # Painting: press on a cell toggles it, dragging paints the same value over more cells.
        self.canvas.view.setMouseEnabled(x=False, y=False)
        self.canvas.graphics.viewport().installEventFilter(self)
        self._paint_value: float | None = None
        self.canvas.set_tooltip_fn(self._canvas_tooltip)
        self.canvas.set_title("Scan once: the pattern used appears here, over the target's tokens")
        self._canvas_tokens: tuple[str, ...] = ()
        self._canvas_shape: tuple[int, ...] = ()
        w = QWidget()
        lay = QVBoxLayout(w)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(form)
        lay.addWidget(self.canvas, 1)
        self.preset.currentIndexChanged.connect(self._apply_preset)
        self.offset.valueChanged.connect(lambda _v: self._apply_preset())
        self.custom_button.clicked.connect(self._emit_scan)
        self.clear_paint.clicked.connect(self._clear_canvas)
        return w

    # -- intents -----------------------------------------------------------------------------
    def settings(self) -> dict:
        custom = None
        text = self.formula.text().strip()
        if self.use_painted.isChecked() and self.painted is not None:
            custom = {"formula": "", "painted": tuple(tuple(float(v) for v in row)
                                                      for row in self.painted),
                      "target": self.custom_target.currentData(), "label": "painted"}
        elif text:
            custom = {"formula": text, "painted": (), "target": self.custom_target.currentData(),
                      "label": text}
        return {"seq_len": self.seq_len.value(), "batch": self.batch.value(),
                "seed": self.seed.value(), "token_pool": self.pool.currentData(),
                "use_prompt": self.use_prompt.isChecked(),
                "error_measure": self.measure.currentText(),
                "exclude_bos": self.exclude_bos.isChecked(),
                "exclude_current_token": self.exclude_current.isChecked(), "custom": custom}

    def _emit_scan(self) -> None:
        self.show_message("")
        self.sig_scan.emit(self.settings())

    def _emit_ablate(self) -> None:
        heads = self.marked_heads("repeated")  # the ablation runs on the repeated tokens
        if self._result is None:
            self.show_message("Scan first: the ablation uses the scan's repeated sequences.")
            return
        if not heads:
            self.show_message("No head is at or above the threshold: lower it to mark some heads.")
            return
        self.show_message("")
        self.sig_ablate.emit({"heads": tuple(heads), "mode": self.ablate_mode.currentText(),
                              "control_sets": self.control_sets.value(),
                              "control_seed": self.control_seed.value()})

    def _on_cell_clicked(self, row: int, col: int) -> None:
        hit = self._cell_head(col, row)
        if hit is not None:
            self.sig_head_clicked.emit(hit[1], hit[2])

    def _on_row_clicked(self, row: int, _col: int) -> None:
        item = self.table.item(row, 1)
        if item is not None:
            layer, head = item.data(Qt.ItemDataRole.UserRole)
            self.sig_head_clicked.emit(int(layer), int(head))

    # -- state from outside --------------------------------------------------------------------
    def set_model(self, n_layers: int, n_heads: int, n_ctx: int) -> None:
        """A new model: forget old results and say how long T may be."""
        self._n_ctx = int(n_ctx)
        self.seq_len.setToolTip(f"T: length of the random segment r. The sequence is BOS + r + r "
                                f"(2T + 1 tokens); this model's context of {n_ctx} allows T ≤ "
                                f"{max((n_ctx - 1) // 2, 0)}.")
        self.clear()

    def clear(self) -> None:
        self._result = None
        self.inspect_button.setEnabled(False)
        self._ablation = None
        self._blocks = []
        self._draw_marks()  # hides the old outlines
        for t in self._titles:
            self.heat.view.removeItem(t)
        self._titles = []
        self.table.setRowCount(0)
        self.heat.clear()
        self.heat.set_title("")
        self.painted = None
        self._canvas_shape = ()
        self.canvas.clear()
        self.loss_plot.clear()
        self._loss_values_shown(False)
        self.ablate_bars.clear()
        self.summary.setText("Scan to score every head on repeated random tokens.")
        self.ablate_summary.setText("Scan, choose a threshold, then ablate the marked heads.")
        self._update_threshold_label()

    def show_message(self, text: str, warn: bool = False) -> None:
        """A problem (red) or, with ``warn``, a caution about what is shown (amber)."""
        self.message.setStyleSheet(AMBER if warn else RED)
        self._warning = warn and bool(text)
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def set_stale(self, text: str) -> None:
        self.show_message(text, warn=True)

    def set_busy(self, busy: bool, text: str = "", ablating: bool = False) -> None:
        self.scan_button.setEnabled(not busy)
        self.custom_button.setEnabled(not busy)
        self.ablate_button.setEnabled(not busy)
        if not busy:
            self._idle_summaries, self._was = None, self._idle_summaries
        target = self.ablate_summary if ablating else self.summary
        if busy and self._idle_summaries is None:
            self._idle_summaries = (self.summary.text(), self.ablate_summary.text())
            if text:
                target.setText(text)
            elif ablating:
                target.setText("Ablating the marked heads and the random control sets…")

    def set_cancelled(self) -> None:
        """A cancelled scan or ablation: put back what the panel said before, marked."""
        summary, ablate = self._was or (None, None)
        if summary is not None:
            kept = " Showing the previous scan." if self._result is not None else ""
            self.summary.setText("Cancelled." + kept + ("" if self._result is None
                                                         else " " + summary))
            self.ablate_summary.setText(ablate)

    def set_selected_head(self, layer: int, head: int) -> None:
        self._selected = (int(layer), int(head))
        self._draw_marks()

    def set_result(self, result) -> None:
        """Show an InductionResult (duck-typed)."""
        if self._warning:  # a "these scores are stale" note no longer applies
            self.show_message("")
        self._result = result
        self.inspect_button.setEnabled(True)
        self._ablation = None
        r = result
        lo = -1.0 if r.error_measure == "abs" else 0.0
        self.threshold.setMinimum(int(lo * 100))
        has_prompt = bool(r.prompt_scores)
        item = self.source.model().item(1)
        item.setEnabled(has_prompt)
        if not has_prompt and self.source.currentData() == "prompt":
            self.source.setCurrentIndex(0)
        passes = (f" in {r.n_forward_passes} passes" if r.n_forward_passes > 1
                  else " in one forward pass")
        top = self._top("repeated", "induction")
        self.summary.setText(
            f"{r.n_layers}×{r.n_heads} heads scored on {r.batch} sequences of BOS + {r.seq_len} "
            f"random tokens × 2{' and your prompt' if has_prompt else ''}{passes} "
            f"({r.seconds:.2f} s). Loss: first copy {r.first_half_loss:.2f}, repeated copy "
            f"{r.second_half_loss:.2f} nats. Best induction head: {top}."
            + ("".join(" " + n for n in r.notes)))
        self._draw_loss()
        self.ablate_bars.clear()
        self.ablate_summary.setText("Choose a threshold, then ablate the marked heads.")
        if r.custom_pattern is not None:
            tokens = r.rep_str_tokens if r.custom_target == "repeated" else r.prompt_str_tokens
            self._set_canvas(np.asarray(r.custom_pattern, np.float32), tokens)
        self._redraw()

    def set_ablation(self, ab) -> None:
        """Show an AblationResult: the loss curves and the repeated-half loss before/after."""
        self._ablation = ab
        self._draw_loss()
        n = len(ab.heads)
        labels = ["clean", f"ablated ({n})"] + [f"control {i + 1}" for i in
                                                range(len(ab.control_heads))]
        values = [ab.clean_halves[1], ab.ablated_halves[1]] + [float(v) for v in
                                                               ab.control_halves[:, 1]]
        details = ["no ablation", ", ".join(_label(*h) for h in ab.heads)] + [
            ", ".join(_label(*h) for h in s) for s in ab.control_heads]
        self.ablate_bars.set_data(labels, values, details=details)
        self.ablate_bars.set_title(f"{ab.mode}-ablation of {n} head{'s' * (n != 1)}")
        ctrl = (f"random control sets of {n}: {ab.control_rise:+.2f} on average"
                if len(ab.control_heads) else "no control sets")
        self.ablate_summary.setText(
            f"{ab.mode.capitalize()}-ablating {', '.join(_label(*h) for h in ab.heads)}: repeated-"
            f"half loss {ab.clean_halves[1]:.2f} → {ab.ablated_halves[1]:.2f} nats "
            f"({ab.ablated_rise:+.2f}); {ctrl}." + "".join(" " + t for t in ab.notes))

    # -- data helpers --------------------------------------------------------------------------
    def scores(self, source: str | None = None) -> dict[str, np.ndarray]:
        """The maps shown for ``source`` (default: the current one), in display order."""
        r = self._result
        if r is None:
            return {}
        source = source or self.source.currentData()
        base = r.repeated if source == "repeated" else r.prompt_scores
        out = {k: np.asarray(base[k], np.float32) for k in SCORE_TITLES if k in base}
        if r.custom_scores is not None and r.custom_target == source:
            out["custom"] = np.asarray(r.custom_scores, np.float32)
        return out

    def threshold_value(self) -> float:
        return self.threshold.value() / 100.0

    def marked_heads(self, source: str | None = None) -> list[tuple[int, int]]:
        """Heads at or above the threshold on the 'rank by' score of ``source`` (default: the
        one the maps show)."""
        maps = self.scores(source)
        key = self.rank_by.currentData()
        if key not in maps:
            return []
        layers, heads = np.nonzero(maps[key] >= self.threshold_value() - 1e-9)
        order = np.argsort(-maps[key][layers, heads], kind="stable")
        return [(int(layers[i]), int(heads[i])) for i in order]

    def _top(self, source: str, key: str) -> str:
        maps = self.scores(source)
        if key not in maps:
            return "–"
        m = maps[key]
        la, h = np.unravel_index(int(np.argmax(m)), m.shape)
        return f"{_label(int(la), int(h))} ({float(m[la, h]):.2f})"

    def export_table(self) -> tuple[list[str], np.ndarray]:
        """Every score of every head as (header, [n_layers * n_heads, columns]) for CSV."""
        r = self._result
        if r is None:
            return [], np.zeros((0, 0))
        header = ["layer", "head"]
        cols = []
        for source, base in (("repeated", r.repeated), ("prompt", r.prompt_scores)):
            for k in sorted(base):
                header.append(f"{source}_{k}")
                cols.append(np.asarray(base[k], np.float64).reshape(-1))
        if r.custom_scores is not None:
            header.append(f"{r.custom_target}_custom")
            cols.append(np.asarray(r.custom_scores, np.float64).reshape(-1))
        la, h = np.meshgrid(np.arange(r.n_layers), np.arange(r.n_heads), indexing="ij")
        table = np.column_stack([la.reshape(-1), h.reshape(-1), *cols])
        return header, table

    def export_target(self):
        return self.heat.export_target()

    # -- drawing -------------------------------------------------------------------------------
    def _cell_head(self, x: float, y: float):
        """(score key, layer, head) under data point (x, y) of the mosaic, or None on a gap."""
        if not self._blocks:
            return None
        n_heads = self._blocks[0][1].shape[1]
        block, col = divmod(int(math.floor(x)), n_heads + 1)
        layer = int(math.floor(y))
        if col >= n_heads or block >= len(self._blocks) or not 0 <= layer < self._blocks[0][1].shape[0]:
            return None
        return self._blocks[block][0], layer, col

    def _tooltip(self, x: float, y: float) -> str | None:
        hit = self._cell_head(x, y)
        if hit is None:
            return None
        key, layer, head = hit
        values = " · ".join(f"{SCORE_TITLES[k].lower()} {float(m[layer, head]):.3f}"
                            for k, m in self._blocks)
        return f"{_label(layer, head)}: {SCORE_TITLES[key]} = " \
               f"{float(dict(self._blocks)[key][layer, head]):.3f}   ({values})"

    def _redraw(self) -> None:
        maps = self.scores()
        if not maps:
            return
        self._blocks = list(maps.items())
        n_layers, n_heads = self._blocks[0][1].shape
        width = len(self._blocks) * (n_heads + 1) - 1
        image = np.full((n_layers, width), np.nan, dtype=np.float32)
        col_labels = [""] * width
        for b, (_key, m) in enumerate(self._blocks):
            x0 = b * (n_heads + 1)
            image[:, x0:x0 + n_heads] = m
            for h in range(n_heads):
                col_labels[x0 + h] = str(h)
        lo = -1.0 if self._result.error_measure == "abs" else 0.0
        rects = [(b * (n_heads + 1), 0, n_heads, n_layers) for b in range(len(self._blocks))]
        self.heat.set_image(image, (lo, 1.0), (n_layers, width), cell_rects=rects)
        self.heat.x_axis.set_labels(col_labels)
        self.heat.y_axis.set_labels([f"L{i}" for i in range(n_layers)])
        for t in self._titles:
            self.heat.view.removeItem(t)
        self._titles = []
        for b, (key, _m) in enumerate(self._blocks):
            title = SCORE_TITLES[key]
            if key == "induction":
                title += " (stripe)" if self.source.currentData() == "repeated" else " (detector)"
            elif key == "custom":
                label = self._result.custom_label or "custom"
                title += ": " + (label if len(label) <= 12 else label[:11] + "…")
            t = pg.TextItem(title, color="k", anchor=(0.5, 1.0))
            f = QFont()
            f.setPointSize(8)
            t.setFont(f)
            t.setPos(b * (n_heads + 1) + n_heads / 2, -0.05)
            self.heat.view.addItem(t, ignoreBounds=True)
            self._titles.append(t)
        self.heat.view.setRange(QRectF(0, -0.6 - 0.04 * n_layers, width,
                                       n_layers + 0.6 + 0.04 * n_layers), padding=0.01)
        self.heat.set_title(f"{self.source.currentText()} · outlined: ≥ {self.threshold_value():.2f}"
                            f" · red: selected head")
        self._fill_table(maps)
        self._draw_marks()

    def _fill_table(self, maps: dict[str, np.ndarray]) -> None:
        key = self.rank_by.currentData()
        if key not in maps:
            key = "induction"
        keys = [key] + [k for k in maps if k != key]
        m = maps[key]
        n_layers, n_heads = m.shape
        order = np.argsort(-m.reshape(-1), kind="stable")
        thr = self.threshold_value()
        self.table.clear()
        self.table.setColumnCount(2 + len(keys))
        self.table.setHorizontalHeaderLabels(["#", "head"] + [SCORE_TITLES[k] for k in keys])
        for i, k in enumerate(keys):
            self.table.horizontalHeaderItem(2 + i).setToolTip(SCORE_HELP[k])
        self.table.setRowCount(len(order))
        bold = QFont()
        bold.setBold(True)
        for row, flat in enumerate(order):
            layer, head = divmod(int(flat), n_heads)
            above = float(m[layer, head]) >= thr - 1e-9
            items = [QTableWidgetItem(str(row + 1)), QTableWidgetItem(_label(layer, head))]
            items[1].setData(Qt.ItemDataRole.UserRole, (layer, head))
            items += [QTableWidgetItem(f"{float(maps[k][layer, head]):.3f}") for k in keys]
            for col, it in enumerate(items):
                if above:
                    it.setFont(bold)
                    it.setBackground(QColor(255, 236, 200))
                self.table.setItem(row, col, it)
        self._update_threshold_label()

    def _draw_marks(self) -> None:
        for key in self._marks:
            self.heat.set_overlay(key, None)
        self._marks = set()
        if not self._blocks:
            return
        thr = self.threshold_value()
        n_heads = self._blocks[0][1].shape[1]
        for b, (_k, m) in enumerate(self._blocks):
            x0 = b * (n_heads + 1)
            for layer, head in zip(*np.nonzero(m >= thr - 1e-9), strict=True):
                key = f"mark{b}_{layer}_{head}"
                self.heat.set_overlay(key, (x0 + head + 0.08, layer + 0.08, 0.84, 0.84), MARK,
                                      width=2)
                self._marks.add(key)
            layer, head = self._selected
            if 0 <= layer < m.shape[0] and 0 <= head < n_heads:
                key = f"sel{b}"
                self.heat.set_overlay(key, (x0 + head, layer, 1, 1), SELECTED, width=3)
                self._marks.add(key)

    def _threshold_changed(self, _value: int) -> None:
        if self._blocks:  # only the outlines, the table's highlight and the title change
            self.heat.set_title(f"{self.source.currentText()} · outlined: ≥ "
                                f"{self.threshold_value():.2f} · red: selected head")
            self._fill_table(self.scores())
            self._draw_marks()
        self._update_threshold_label()

    def _update_threshold_label(self) -> None:
        n = len(self.marked_heads())
        self.threshold_label.setText(f"≥ {self.threshold_value():.2f}: {n} head{'s' * (n != 1)}")
        self._update_ceiling_note()
        if not hasattr(self, "ablate_heads_label"):
            return  # still building the tabs
        # The ablation runs on the repeated random tokens, so it takes their scores, whichever
        # scores the maps show.
        heads = self.marked_heads("repeated")
        key = self.rank_by.currentData()
        if self._result is None:
            self.ablate_heads_label.setText("")
        elif heads:
            self.ablate_heads_label.setText(
                f"Will ablate {len(heads)}: {', '.join(_label(*h) for h in heads)} "
                f"({SCORE_TITLES[key]} ≥ {self.threshold_value():.2f} on the repeated random "
                "tokens, which the ablation runs on).")
        else:
            self.ablate_heads_label.setText(
                f"No head has {SCORE_TITLES[key].lower()} ≥ {self.threshold_value():.2f} on the "
                "repeated random tokens: lower the threshold (Head scores tab).")

    def _update_ceiling_note(self) -> None:
        """On a natural prompt even a perfect head scores low: say how low, and what to use."""
        r, key = self._result, self.rank_by.currentData()
        ceilings = getattr(r, "prompt_ceilings", None) or {}
        if r is None or self.source.currentData() != "prompt" or key not in ceilings:
            self.ceiling_note.hide()
            return
        ceiling = float(ceilings[key])
        if ceiling >= 0.9:
            self.ceiling_note.hide()
            return
        rows = int(r.prompt_pattern_rows.get(key, 0))
        n = len(r.prompt_str_tokens)
        thr = self.threshold_value()
        text = (f"On your prompt a perfect {SCORE_TITLES[key].lower()} head would score at most "
                f"{ceiling:.2f}: only {rows} of its {n} positions have a cell in the pattern")
        if key in ("induction", "duplicate"):
            text += " (few tokens repeat)"
        if ceiling < thr:
            text += f", below the threshold {thr:.2f}, so no head can reach it"
        scores = self.scores("prompt").get(key)
        if scores is not None and ceiling > 0:
            la, h = np.unravel_index(int(np.argmax(scores)), scores.shape)
            best = float(scores[la, h])
            text += (f". The best head, {_label(int(la), int(h))}, scores {best:.3f}: "
                     f"{best / ceiling:.0%} of the most possible")
        text += (". For a clean test use the repeated random tokens (scores on: Repeated random "
                 "tokens): every token of their second half repeats.")
        self.ceiling_note.setText(text)
        self.ceiling_note.show()

    def _loss_values_shown(self, shown: bool) -> None:
        for name in ("left", "bottom"):
            self.loss_plot.getPlotItem().getAxis(name).setStyle(showValues=shown)

    def _draw_loss(self) -> None:
        r = self._result
        self.loss_plot.clear()
        self._loss_values_shown(r is not None)
        if r is None:
            return
        loss = np.asarray(r.loss_per_position, np.float64)
        x = np.arange(1, loss.size + 1, dtype=np.float64)  # index p predicts token p + 1
        first, second = r.first_half_slice, r.second_half_slice
        self.loss_plot.plot(x[first], loss[first], pen=pg.mkPen((40, 100, 200), width=2),
                            name=f"first copy (mean {r.first_half_loss:.2f})")
        self.loss_plot.plot(x[second], loss[second], pen=pg.mkPen((230, 120, 20), width=2),
                            name=f"repeated copy (mean {r.second_half_loss:.2f})")
        ab = self._ablation
        if ab is not None:
            self.loss_plot.plot(x, np.asarray(ab.loss_ablated, np.float64),
                                pen=pg.mkPen((200, 30, 30), width=2, style=Qt.PenStyle.DashLine),
                                name=f"{len(ab.heads)} heads ablated "
                                     f"(repeated {ab.ablated_halves[1]:.2f})")
            if len(ab.loss_control):
                self.loss_plot.plot(x, np.asarray(ab.loss_control, np.float64).mean(0),
                                    pen=pg.mkPen((120, 120, 120), width=2,
                                                 style=Qt.PenStyle.DotLine),
                                    name=f"random control (repeated "
                                         f"{float(ab.control_halves[:, 1].mean()):.2f})")
        boundary = pg.InfiniteLine(second.start + 0.5, angle=90,
                                   pen=pg.mkPen((90, 90, 90), style=Qt.PenStyle.DashLine))
        self.loss_plot.addItem(boundary)
        self.loss_plot.setTitle("Loss per position on the repeated random tokens", color="k")

    # -- custom pattern canvas -------------------------------------------------------------------
    def _apply_preset(self) -> None:
        name = self.preset.currentText()
        formula = PRESETS.get(name)
        if formula is None:
            formula = f"q - k == {self.offset.value()}"
        self.formula.setText(formula)

    def _set_canvas(self, pattern: np.ndarray, tokens) -> None:
        self.painted = np.tril(np.asarray(pattern, np.float32))
        self._canvas_tokens = tuple(tokens)
        self._draw_canvas()

    def _draw_canvas(self) -> None:
        if self.painted is None:
            return
        shown = self.painted.copy()
        shown[np.triu_indices(shown.shape[0], 1)] = np.nan
        labels = [visible(t) for t in self._canvas_tokens]
        if len(labels) != shown.shape[0]:
            labels = [str(i) for i in range(shown.shape[0])]
        new_shape = self._canvas_shape != shown.shape
        self._canvas_shape = shown.shape
        self.canvas.set_matrix(shown, (0.0, 1.0), labels, labels, reset_view=new_shape)
        self.canvas.set_title(f"target pattern ({int(np.nansum(self.painted))} cells) — click to "
                              "toggle, drag to paint")

    def _canvas_cell(self, pos) -> tuple[int, int] | None:
        """(query, key) of the canvas cell under viewport position ``pos``, if paintable."""
        if self.painted is None:
            return None
        p = self.canvas.view.mapSceneToView(self.canvas.graphics.mapToScene(pos.toPoint()))
        q, k = int(math.floor(p.y())), int(math.floor(p.x()))
        if not (0 <= k <= q < self.painted.shape[0]):
            return None
        return q, k

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt naming)
        if self.painted is not None and obj is self.canvas.graphics.viewport():
            kind = event.type()
            if kind == QEvent.Type.MouseButtonPress and event.button() == Qt.MouseButton.LeftButton:
                cell = self._canvas_cell(event.position())
                if cell is not None:
                    self._paint_value = 0.0 if self.painted[cell] > 0 else 1.0
                    self._paint(cell)
            elif kind == QEvent.Type.MouseMove and self._paint_value is not None:
                cell = self._canvas_cell(event.position())
                if cell is not None and event.buttons() & Qt.MouseButton.LeftButton:
                    self._paint(cell)
            elif kind == QEvent.Type.MouseButtonRelease:
                self._paint_value = None
        return super().eventFilter(obj, event)

    def _paint(self, cell: tuple[int, int]) -> None:
        if self.painted[cell] == self._paint_value:
            return
        self.painted[cell] = self._paint_value
        self.use_painted.setChecked(True)
        self._draw_canvas()

    def _clear_canvas(self) -> None:
        if self.painted is not None:
            self.painted[:] = 0
            self.use_painted.setChecked(True)
            self._draw_canvas()

    def _canvas_tooltip(self, x: float, y: float) -> str | None:
        if self.painted is None:
            return None
        q, k = int(y), int(x)
        if not (0 <= k <= q < self.painted.shape[0]):
            return None
        toks = self._canvas_tokens
        tq = visible(toks[q]) if q < len(toks) else str(q)
        tk = visible(toks[k]) if k < len(toks) else str(k)
        return f"query {q} {tq!r} → key {k} {tk!r}: {self.painted[q, k]:.0f}"
