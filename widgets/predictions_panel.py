"""The Predictions panel: the prompt's tokens and the model's top-k next tokens at each position."""

from __future__ import annotations

from html import escape

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QSplitter,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from widgets.token_strip import TokenStrip, visible

TOP_COLUMNS = 5


class PredictionsPanel(QWidget):
    """Shows a run_prompt result. Emits ``sig_position_selected`` when the user picks a position,
    ``sig_export(kind)`` ("png", "svg" or "csv") when the user asks for an export."""

    sig_position_selected = Signal(int)
    sig_export = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("PredictionsPanel")
        self.summary = QLabel("Run a prompt to see the model's predictions.")
        self.summary.setWordWrap(True)
        self.strip = TokenStrip()
        self.strip.setToolTip("Prompt tokens coloured by the model's loss on each (darker = more "
                              "surprising). Click one to see what the model predicts after it.")
        self.table = QTableView()
        self.table.setObjectName("predictionsTable")
        self.model = QStandardItemModel(0, 3 + TOP_COLUMNS)
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setToolTip("Each row: a position, its token, the loss of predicting the next "
                              "prompt token, and the model's top next-token predictions.")
        self.detail = QLabel()
        self.detail.setTextFormat(Qt.TextFormat.RichText)
        self.detail.setObjectName("predictionsDetail")
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.strip)
        split.addWidget(self.table)
        split.addWidget(self.detail)
        split.setSizes([80, 300, 120])
        self.export_button = self._export_button()
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.summary, 1)
        top.addWidget(self.export_button, 0, Qt.AlignmentFlag.AlignTop)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(split, 1)
        self._result = None
        self.strip.sig_position_clicked.connect(self._select)
        self.table.clicked.connect(lambda idx: self._select(idx.row()))

    def _export_button(self) -> QToolButton:
        button = QToolButton()
        button.setObjectName("predictionsExport")
        button.setText("Export")
        button.setToolTip("Save the panel as a picture (PNG, SVG) or every position's loss and "
                          "top predictions as CSV")
        button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(button)
        for kind, text in (("png", "Picture as PNG…"), ("svg", "Picture as SVG…"),
                           ("csv", "Table as CSV…")):
            action = menu.addAction(text)
            action.setObjectName(f"export_{kind}")
            action.triggered.connect(lambda _checked=False, k=kind: self.sig_export.emit(k))
        button.setMenu(menu)
        self.export_menu = menu
        return button

    def export_table(self) -> tuple[list[str], list[list[str]]]:
        """Every position: its token, the loss of predicting it, and every top prediction after
        it with its probability (all k the result holds, not only the columns shown)."""
        r = self._result
        k = r.top_probs.shape[1]
        header = ["pos", "token", "loss"] + [f"top {j + 1} {what}" for j in range(k)
                                             for what in ("token", "prob")]
        rows = []
        for p, token in enumerate(r.str_tokens):
            loss = "" if p == 0 else f"{float(r.loss_per_token[p - 1]):.7g}"
            row = [str(p), token, loss]
            for j in range(k):
                row += [r.top_tokens[p][j], f"{float(r.top_probs[p, j]):.7g}"]
            rows.append(row)
        return header, rows

    def clear(self, text: str = "Run a prompt to see the model's predictions.") -> None:
        """Show no result (e.g. another model was loaded: the old predictions do not apply)."""
        self._result = None
        self.model.clear()
        self.strip.clear()
        self.detail.clear()
        self.summary.setText(text)

    def set_result(self, result, note: str = "") -> None:
        """Show a PromptResult (duck-typed: numpy arrays and tuples of strings); ``note`` goes
        under the summary (e.g. where the numbers come from)."""
        self._result = result
        n = len(result.str_tokens)
        loss = np.full(n, np.nan, dtype=np.float32)
        loss[1:] = result.loss_per_token
        self.strip.set_tokens(result.str_tokens,
                              [f"pos {i}: {t!r}" + (f" · loss {loss[i]:.2f}" if i else "")
                               for i, t in enumerate(result.str_tokens)])
        self.strip.set_values(loss, vmax=max(float(np.nanmax(loss)) if n > 1 else 1.0, 1e-6))
        headers = ["pos", "token", "loss"] + [f"top {k + 1}" for k in range(TOP_COLUMNS)]
        self.model.clear()
        self.model.setHorizontalHeaderLabels(headers)
        k = min(TOP_COLUMNS, result.top_probs.shape[1])
        for p in range(n):
            row = [QStandardItem(str(p)), QStandardItem(visible(result.str_tokens[p])),
                   QStandardItem("" if p == 0 else f"{loss[p]:.3f}")]
            for j in range(k):
                prob = float(result.top_probs[p, j])
                cell = QStandardItem(f"{visible(result.top_tokens[p][j])}  {prob:.1%}")
                cell.setBackground(QColor(255, int(255 - 120 * prob), int(255 - 200 * prob)))
                is_next = p + 1 < n and int(result.top_ids[p, j]) == int(result.token_ids[p + 1])
                if is_next:
                    font = cell.font()
                    font.setBold(True)
                    cell.setFont(font)
                    cell.setToolTip("This is the actual next token of the prompt.")
                row.append(cell)
            self.model.appendRow(row)
        trunc = (f" (truncated from {result.truncated_from} tokens)"
                 if result.truncated_from else "")
        self.summary.setText(f"{n} tokens{trunc} · mean loss {result.mean_loss:.3f} · "
                             f"next token after the prompt: "
                             f"<b>{escape(visible(result.top_tokens[-1][0]))}</b> "
                             f"({float(result.top_probs[-1, 0]):.1%})"
                             + (f"<br><i>{escape(note)}</i>" if note else ""))
        self._select(n - 1, emit=False)

    def selected_position(self) -> int:
        idx = self.table.currentIndex()
        return idx.row() if idx.isValid() else -1

    def set_position(self, position: int) -> None:
        if self._result is not None:
            n = len(self._result.str_tokens)
            self._select(position if position >= 0 else n - 1, emit=False)

    def _select(self, position: int, emit: bool = True) -> None:
        r = self._result
        if r is None or not 0 <= position < len(r.str_tokens):
            return
        self.table.selectRow(position)
        self.strip.set_selected(position)
        rows = "".join(
            f"<tr><td>{j + 1}.</td><td><code>{escape(visible(r.top_tokens[position][j]))}</code></td>"
            f"<td align='right'>{float(r.top_probs[position, j]):.2%}</td></tr>"
            for j in range(r.top_probs.shape[1]))
        self.detail.setText(f"After <code>{escape(visible(r.str_tokens[position]))}</code> (pos "
                            f"{position}) the model predicts:<table>{rows}</table>")
        if emit:
            self.sig_position_selected.emit(position)
