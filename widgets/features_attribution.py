"""Feature attribution: each active feature's direct effect on the answer, ranked and by position.

A pure view of ``engine.sae_attribution.FeatureAttributionResult``: a horizontal bar chart of the
features with the largest effect at the target position (clicking one selects it), a heatmap of
those features' effects at every position (diverging colours, zero white), and a line saying how
the terms add up: features + bias + error term = the component's direct logit attribution.
"""

from __future__ import annotations

from html import escape

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from widgets.bar_chart import BarChart
from widgets.heatmap import HeatmapView
from widgets.token_strip import visible

N_SHOWN = 20


class FeatureAttributionView(QWidget):
    sig_run = Signal(str, str, int)  # answer, counterfactual, position
    sig_feature_clicked = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.result = None
        self.answer_edit = QLineEdit()
        self.answer_edit.setObjectName("featAttrAnswer")
        self.answer_edit.setPlaceholderText("answer, e.g. ' Paris'")
        self.answer_edit.setToolTip("The answer token (one token, with its leading space)")
        self.cf_edit = QLineEdit()
        self.cf_edit.setObjectName("featAttrCounterfactual")
        self.cf_edit.setPlaceholderText("optional, e.g. ' John'")
        self.cf_edit.setToolTip("Optional: attribute the logit difference answer − this token")
        self.position_spin = QSpinBox()
        self.position_spin.setObjectName("featAttrPosition")
        self.position_spin.setRange(-4096, 4096)
        self.position_spin.setValue(-1)
        self.position_spin.setToolTip("Whose prediction is explained: -1 = after the last token")
        self.run_button = QPushButton("Attribute")
        self.run_button.setObjectName("featAttrRun")
        self.run_button.setToolTip("Each active feature's direct effect on this target, at the "
                                   "SAE's layer")
        self.run_button.clicked.connect(self.request_run)
        self.answer_edit.returnPressed.connect(self.request_run)
        self.cf_edit.returnPressed.connect(self.request_run)
        row = QHBoxLayout()
        row.addWidget(QLabel("Target"))
        row.addWidget(self.answer_edit, 2)
        row.addWidget(QLabel("minus"))
        row.addWidget(self.cf_edit, 2)
        row.addWidget(QLabel("at position"))
        row.addWidget(self.position_spin)
        row.addWidget(self.run_button)
        self.message = QLabel()
        self.message.setObjectName("featAttrMessage")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #b00020;")
        self.message.hide()
        self.summary = QLabel("Type an answer and click Attribute.")
        self.summary.setObjectName("featAttrSummary")
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setWordWrap(True)
        self.summary.setMinimumHeight(3 * self.fontMetrics().lineSpacing())
        self.bars = BarChart("h")
        self.bars.setObjectName("featAttrBars")
        self.bars.set_axis_titles("", "direct effect on the logit")
        self.bars.sig_bar_clicked.connect(self._bar_clicked)
        self.heatmap = HeatmapView(title="", x_label="position", y_label="feature",
                                   colorbar_label="direct effect", aspect_locked=False)
        self.heatmap.setObjectName("featAttrHeatmap")
        self.heatmap.set_colormap("CET-D1")
        self.heatmap.sig_cell_clicked.connect(self._cell_clicked)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.bars)
        split.addWidget(self.heatmap)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setChildrenCollapsible(False)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.message)
        lay.addWidget(self.summary)
        lay.addWidget(split, 1)

    def request_run(self) -> None:
        self.sig_run.emit(self.answer_edit.text(), self.cf_edit.text(),
                          self.position_spin.value())

    def show_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def clear(self) -> None:
        self.result = None
        self.bars.clear()
        self.heatmap.clear()
        self.summary.setText("Type an answer and click Attribute.")

    def set_result(self, r) -> None:
        self.result = r
        self.show_message("")
        p = r.position
        n = min(N_SHOWN, len(r.features))
        top = r.effects[:n, p]
        labels = [f"F{int(f)}" for f in r.features[:n]]
        details = [f"activation {float(r.activations[i, p]):.3g} at pos {p}" for i in range(n)]
        self.bars.set_data(labels, top, details=details)  # the largest first, on top
        widest = max((self.fontMetrics().horizontalAdvance(x) for x in labels), default=0)
        self.bars.plot.getAxis("left").setWidth(widest + 14)  # every label drawn
        self.bars.set_title(f"Top {n} features at position {p} ({visible(r.str_tokens[p])})")
        if n:
            block = r.effects[:n]
            m = float(np.abs(block).max()) or 1.0
            self.heatmap.set_matrix(block.astype(np.float32), (-m, m), labels,
                                    list(r.str_tokens))
            self.heatmap.set_title(f"Direct effect on {r.target_label} by position")
            self.heatmap.set_tooltip_fn(self._tooltip)
        else:
            self.heatmap.clear()
        feats = float(r.effects[:, p].sum() + r.rest[p])
        kind = "logit difference" if r.is_difference else "logit"
        self.summary.setText(
            f"Direct effect on the {kind} of <b>{escape(r.target_label)}</b> at position {p} "
            f"from <code>{escape(r.hook_name)}</code> ({len(r.features)} active features): "
            f"features <b>{feats:+.3f}</b> + bias {float(r.bias[p]):+.3f} + error term "
            f"{float(r.error[p]):+.3f} = <b>{feats + float(r.bias[p] + r.error[p]):+.3f}</b>; "
            f"TransformerLens's DLA of {escape(r.component_label)}: "
            f"{float(r.component[p]):+.3f}. The model's {kind}: {r.final_value:.3f}.")

    def _tooltip(self, x: float, y: float) -> str | None:
        r = self.result
        row, col = int(y), int(x)
        if r is None or not (0 <= row < min(N_SHOWN, len(r.features)) and
                             0 <= col < len(r.str_tokens)):
            return None
        return (f"F{int(r.features[row])} at pos {col} ({visible(r.str_tokens[col])}): "
                f"effect {float(r.effects[row, col]):+.3f}, activation "
                f"{float(r.activations[row, col]):.3g}")

    def _bar_clicked(self, index: int) -> None:
        r = self.result
        if r is None:
            return
        if 0 <= index < min(N_SHOWN, len(r.features)):
            self.sig_feature_clicked.emit(int(r.features[index]))

    def _cell_clicked(self, row: int, _col: int) -> None:
        r = self.result
        if r is not None and 0 <= row < min(N_SHOWN, len(r.features)):
            self.sig_feature_clicked.emit(int(r.features[row]))
