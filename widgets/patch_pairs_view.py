"""The clean/corrupted prompt-pair editor: a table of pairs and their tokens side by side.

Differing positions are yellow; positions only one prompt has are red (the run is refused and the
panel explains which tokens do not line up). Edits are debounced into ``sig_edited``.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from widgets.token_strip import visible

DIFF = QColor(255, 214, 102)
BAD = QColor(240, 128, 128)
EXAMPLE = ("When John and Mary went to the store, John gave a drink to",
           "When John and Mary went to the store, Mary gave a drink to", " Mary", " John")


class PairsEditor(QWidget):
    sig_edited = Signal()  # debounced: the pairs changed

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.pairs_table = QTableWidget(0, 4)
        self.pairs_table.setHorizontalHeaderLabels(["Clean prompt", "Corrupted prompt", "Answer",
                                                    "Counterfactual"])
        header = self.pairs_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.pairs_table.setToolTip("One clean/corrupted pair per row; several rows run as a "
                                    "batch and the metric is averaged over them. Answers need "
                                    "their leading space (' Mary').")
        self.pairs_table.verticalHeader().setDefaultSectionSize(
            self.fontMetrics().height() + 8)
        self.pairs_table.itemChanged.connect(lambda *_: self._edited())
        self.add_button = QToolButton()
        self.add_button.setText("+ pair")
        self.add_button.setToolTip("Add a prompt pair to the batch")
        self.add_button.clicked.connect(lambda: self.add_pair(*EXAMPLE))
        self.remove_button = QToolButton()
        self.remove_button.setText("− pair")
        self.remove_button.setToolTip("Remove the selected pair")
        self.remove_button.clicked.connect(self._remove_pair)
        self.alignment = QTableWidget(2, 0)
        self.alignment.setVerticalHeaderLabels(["clean", "corrupted"])
        self.alignment.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.alignment.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.alignment.horizontalHeader().setFixedHeight(self.fontMetrics().height() + 4)
        self.alignment.setFixedHeight(self._table_height(self.alignment, 2, scrollbar=True))
        self.alignment.setToolTip("Tokens of the selected pair side by side; differing positions "
                                  "are yellow, positions only one prompt has are red.")
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(250)
        self._debounce.timeout.connect(self._emit_edited)
        top = QHBoxLayout()
        top.addWidget(self.pairs_table, 1)
        buttons = QVBoxLayout()
        buttons.setSpacing(2)
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        top.addLayout(buttons)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(top)
        lay.addWidget(self.alignment)
        self.note = QLabel()
        self.note.setObjectName("pairsNote")
        self.note.setStyleSheet("color: #8a5a00;")
        self.note.setWordWrap(True)
        self.note.hide()
        lay.addWidget(self.note)
        self.add_pair(*EXAMPLE)
        # The example needs no "edited" signal: the binding checks the pairs when a model loads
        # (a late duplicate check would start a job after the window looks idle).
        self._debounce.stop()

    @staticmethod
    def _table_height(table, rows: int, scrollbar: bool = False) -> int:
        extra = table.horizontalScrollBar().sizeHint().height() if scrollbar else 0
        return (table.horizontalHeader().height() + rows * table.verticalHeader()
                .defaultSectionSize() + 2 * table.frameWidth() + extra)

    def _fit_rows(self) -> None:
        """As tall as its pairs, up to three (then it scrolls): the heatmap keeps the room."""
        n = min(max(self.pairs_table.rowCount(), 1), 3)
        self.pairs_table.setFixedHeight(self._table_height(self.pairs_table, n))

    def add_pair(self, clean: str, corrupted: str, answer: str, counterfactual: str) -> None:
        self.pairs_table.blockSignals(True)
        row = self.pairs_table.rowCount()
        self.pairs_table.insertRow(row)
        for col, text in enumerate((clean, corrupted, answer, counterfactual)):
            self.pairs_table.setItem(row, col, QTableWidgetItem(text))
        self.pairs_table.blockSignals(False)
        self._fit_rows()
        self._edited()

    def set_pair(self, row: int, clean: str, corrupted: str, answer: str = "",
                 counterfactual: str = "") -> None:
        while self.pairs_table.rowCount() <= row:
            self.add_pair("", "", "", "")
        for col, text in enumerate((clean, corrupted, answer, counterfactual)):
            if text or col < 2:
                self.pairs_table.item(row, col).setText(text)

    def _remove_pair(self) -> None:
        row = self.pairs_table.currentRow()
        if self.pairs_table.rowCount() > 1:
            self.pairs_table.removeRow(row if row >= 0 else self.pairs_table.rowCount() - 1)
            self._fit_rows()
            self._edited()

    def pairs(self) -> list[tuple[str, str, str, str]]:
        out = []
        for r in range(self.pairs_table.rowCount()):
            cells = [self.pairs_table.item(r, c) for c in range(4)]
            out.append(tuple(c.text() if c is not None else "" for c in cells))
        return out

    def _edited(self) -> None:
        self._debounce.start()

    def _emit_edited(self) -> None:
        self.sig_edited.emit()

    def show_notes(self, notes) -> None:
        """Cautions that do not stop a run (e.g. an answer without its leading space)."""
        self.note.setText(" ".join(notes))
        self.note.setVisible(bool(notes))

    def show_alignment(self, check) -> None:
        """``check``: PairCheck-like (clean_tokens, corrupted_tokens, differing) per pair."""
        if check is None or not check.clean_tokens:
            return
        row = min(max(self.pairs_table.currentRow(), 0), len(check.clean_tokens) - 1)
        clean, corr = check.clean_tokens[row], check.corrupted_tokens[row]
        n = max(len(clean), len(corr))
        self.alignment.clear()
        self.alignment.setColumnCount(n)
        self.alignment.setVerticalHeaderLabels(["clean", "corrupted"])
        self.alignment.setHorizontalHeaderLabels([str(i) for i in range(n)])
        diff = set(check.differing[row])
        for r, toks in enumerate((clean, corr)):
            for i in range(n):
                item = QTableWidgetItem(visible(toks[i]) if i < len(toks) else "")
                if i >= len(clean) or i >= len(corr):
                    item.setBackground(QBrush(BAD))
                elif i in diff:
                    item.setBackground(QBrush(DIFF))
                item.setToolTip(f"position {i}")
                self.alignment.setItem(r, i, item)
        self.alignment.resizeColumnsToContents()
