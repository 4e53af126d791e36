"""Interventions on features: ablate, clamp or steer several features, see predictions change.

A pure view: a table of edits (feature, mode, value, positions), an optional target token whose
logit is reported, Run; the result shows the top next-token predictions before and after side by
side, the target's logit and the prompt's loss before and after, and the prompt's tokens
coloured by how much each position's prediction changed (KL divergence).
"""

from __future__ import annotations

from html import escape

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from widgets.component_palette import parse_positions
from widgets.token_strip import TokenStrip, visible

MODES = (("ablate", "ablate (set to 0)"), ("clamp", "clamp to value"),
         ("steer", "steer (add value × direction)"))


class FeatureInterventionView(QWidget):
    sig_run = Signal(object, str, str)  # [{"feature", "mode", "value", "positions"}], answer, cf
    sig_add_requested = Signal()  # "Add row": the panel adds its selected feature

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.n_features = 0
        self.result = None
        self.table = QTableWidget(0, 4)
        self.table.setObjectName("interventionTable")
        self.table.setHorizontalHeaderLabels(["feature", "mode", "value", "positions"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setToolTip("Each row edits one feature on the current prompt; the SAE's error "
                              "term is kept, so only the edited features change")
        self.table.setMinimumHeight(90)
        self.add_button = QPushButton("Add row")
        self.add_button.setObjectName("interventionAdd")
        self.add_button.setToolTip("Add an edit (for the feature selected in the Browse tab)")
        self.remove_button = QPushButton("Remove")
        self.remove_button.setObjectName("interventionRemove")
        self.answer_edit = QLineEdit()
        self.answer_edit.setObjectName("interventionAnswer")
        self.answer_edit.setPlaceholderText("optional target, e.g. ' Paris'")
        self.answer_edit.setToolTip("Report this token's logit (minus the second one's) before "
                                    "and after")
        self.cf_edit = QLineEdit()
        self.cf_edit.setObjectName("interventionCounterfactual")
        self.cf_edit.setPlaceholderText("minus, optional")
        self.run_button = QPushButton("Run interventions")
        self.run_button.setObjectName("interventionRun")
        self.run_button.setToolTip("Run the current prompt with these feature edits")
        self.add_button.clicked.connect(self.sig_add_requested)
        self.remove_button.clicked.connect(self._remove_selected)
        self.run_button.clicked.connect(self.request_run)
        buttons = QHBoxLayout()
        for w in (self.add_button, self.remove_button):
            buttons.addWidget(w)
        buttons.addWidget(QLabel("Target"))
        buttons.addWidget(self.answer_edit, 1)
        buttons.addWidget(self.cf_edit, 1)
        buttons.addWidget(self.run_button)
        self.message = QLabel()
        self.message.setObjectName("interventionMessage")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #b00020;")
        self.message.hide()
        self.summary = QLabel("Add features to edit, then run.")
        self.summary.setObjectName("interventionSummary")
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setWordWrap(True)
        self.summary.setMinimumHeight(2 * self.fontMetrics().lineSpacing())
        self.predictions = QTableWidget(0, 2)
        self.predictions.setObjectName("interventionPredictions")
        self.predictions.setHorizontalHeaderLabels(["before", "after"])
        self.predictions.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.predictions.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.predictions.setToolTip("The model's top next tokens after the prompt, before and "
                                    "after the edits")
        self.kl_strip = TokenStrip()
        self.kl_strip.setObjectName("interventionKL")
        self.kl_strip.setMaximumHeight(60)
        self.kl_strip.setToolTip("How much each position's next-token prediction changed "
                                 "(KL divergence, darker = more)")
        top = QHBoxLayout()
        top.addWidget(self.table, 3)
        top.addWidget(self.predictions, 2)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(buttons)
        lay.addWidget(self.message)
        lay.addLayout(top, 1)
        lay.addWidget(self.summary)
        lay.addWidget(self.kl_strip)

    # -- edits --------------------------------------------------------------------------------
    def set_n_features(self, n: int) -> None:
        self.n_features = n
        for row in range(self.table.rowCount()):
            self.table.cellWidget(row, 0).setMaximum(max(0, n - 1))

    def add_edit(self, feature: int, mode: str = "ablate", value: float = 0.0,
                 positions: str = "") -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        spin = QSpinBox()
        spin.setRange(0, max(0, self.n_features - 1))
        spin.setValue(feature)
        spin.setToolTip("Feature index")
        combo = QComboBox()
        for key, label in MODES:
            combo.addItem(label, key)
        combo.setCurrentIndex(max(0, combo.findData(mode)))
        val = QDoubleSpinBox()
        val.setRange(-1e5, 1e5)
        val.setDecimals(3)
        val.setValue(value)
        val.setToolTip("Clamp: the activation to set. Steer: how many units of the decoder "
                       "direction to add (negative removes). Ignored for ablate.")
        self.table.setCellWidget(row, 0, spin)
        self.table.setCellWidget(row, 1, combo)
        self.table.setCellWidget(row, 2, val)
        item = QTableWidgetItem(positions)
        item.setToolTip("Positions to edit: empty = all, or e.g. '3, 5-7'")
        self.table.setItem(row, 3, item)

    def _remove_selected(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True)
        if not rows and self.table.rowCount():
            rows = [self.table.rowCount() - 1]
        for r in rows:
            self.table.removeRow(r)

    def edits(self) -> list[dict] | None:
        """The edits as plain dicts; None (with a message shown) when a row is unreadable."""
        out = []
        for row in range(self.table.rowCount()):
            text = (self.table.item(row, 3).text() if self.table.item(row, 3) else "")
            positions = parse_positions(text)
            if positions is None:
                self.show_message(f"Row {row + 1}: cannot read positions {text!r}; use e.g. "
                                  "'3, 5-7', or leave empty for all.")
                return None
            out.append({"feature": self.table.cellWidget(row, 0).value(),
                        "mode": self.table.cellWidget(row, 1).currentData(),
                        "value": float(self.table.cellWidget(row, 2).value()),
                        "positions": positions})
        return out

    def set_edits(self, edits: list[dict]) -> None:
        self.table.setRowCount(0)
        for e in edits:
            positions = ", ".join(str(p) for p in e.get("positions", []))
            self.add_edit(int(e.get("feature", 0)), str(e.get("mode", "ablate")),
                          float(e.get("value", 0.0)), positions)

    def request_run(self) -> None:
        edits = self.edits()
        if edits is None:
            return
        if not edits:
            self.show_message("There is nothing to edit: add a feature first.")
            return
        self.show_message("")
        self.sig_run.emit(edits, self.answer_edit.text(), self.cf_edit.text())

    def show_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    # -- results ------------------------------------------------------------------------------
    def clear_result(self) -> None:
        self.result = None
        self.predictions.setRowCount(0)
        self.kl_strip.clear()
        self.summary.setText("Add features to edit, then run.")

    def set_result(self, r) -> None:
        self.result = r
        self.show_message("")
        k = len(r.before_tokens)
        self.predictions.setRowCount(k)
        for i in range(k):
            for col, (toks, probs) in enumerate(((r.before_tokens, r.before_probs),
                                                 (r.after_tokens, r.after_probs))):
                item = QTableWidgetItem(f"{visible(toks[i])}  {float(probs[i]):.1%}")
                self.predictions.setItem(i, col, item)
        parts = [f"<b>{escape('; '.join(r.labels))}</b>"]
        if r.target_label:
            parts.append(f"{escape(r.target_label)}: {r.target_before:.3f} → "
                         f"<b>{r.target_after:.3f}</b> ({r.target_after - r.target_before:+.3f})")
        if np.isfinite(r.loss_before):
            parts.append(f"loss on the prompt {r.loss_before:.3f} → {r.loss_after:.3f}")
        parts.append(f"largest change at position {int(np.argmax(r.kl))} "
                     f"(KL {float(np.max(r.kl)):.3g})")
        self.summary.setText(" · ".join(parts))
        self.kl_strip.set_tokens(list(r.str_tokens),
                                 [f"pos {i}: {t!r} · KL {float(r.kl[i]):.3g}"
                                  for i, t in enumerate(r.str_tokens)])
        self.kl_strip.set_values(r.kl, vmax=max(float(np.max(r.kl)), 1e-6), rgb=(90, 60, 200))
