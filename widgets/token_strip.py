"""A wrapping strip of a prompt's tokens, optionally coloured by a value per token.

Shared by panels: the predictions panel colours by loss, the attention panel by the attention a
query pays to each key (CircuitsVis's colored-tokens view).
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QAbstractItemView, QListView, QListWidget, QListWidgetItem

# Whitespace as signs; other control characters (byte-level tokens hold them) as their Unicode
# control pictures (U+2400 + code, e.g. \x04 -> ␄), not as nothing (and never raw into an SVG).
_VISIBLE = str.maketrans({**{chr(c): chr(0x2400 + c) for c in range(32)}, "\x7f": "␡",
                          " ": "·", "\n": "↵", "\t": "⇥", "\r": "␍"})


def visible(token: str) -> str:
    """Whitespace made visible, so ' the' and 'the' differ on screen."""
    return token.translate(_VISIBLE) if token else "∅"


class TokenStrip(QListWidget):
    """Tokens left to right, wrapping. Click selects a position; hover reports it."""

    sig_position_clicked = Signal(int)
    sig_position_hovered = Signal(int)  # -1 when the mouse leaves

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(True)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setSpacing(1)
        self.setUniformItemSizes(False)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setMouseTracking(True)
        self.setMinimumHeight(40)
        self.setToolTip("Prompt tokens (· is a space, ↵ a newline). Click a token to select its "
                        "position.")
        self.itemClicked.connect(lambda it: self.sig_position_clicked.emit(self.row(it)))
        self.itemEntered.connect(lambda it: self.sig_position_hovered.emit(self.row(it)))
        self._tokens: list[str] = []

    def set_tokens(self, tokens: list[str] | tuple[str, ...], tooltips: list[str] | None = None):
        self.clear()
        self._tokens = list(tokens)
        metrics = self.fontMetrics()
        for i, tok in enumerate(self._tokens):
            text = visible(tok)
            item = QListWidgetItem(text)
            item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
            item.setSizeHint(QSize(metrics.horizontalAdvance(text) + 10, metrics.height() + 8))
            item.setToolTip(tooltips[i] if tooltips else f"pos {i}: {tok!r}")
            self.addItem(item)

    def tokens(self) -> list[str]:
        return list(self._tokens)

    def set_values(self, values: np.ndarray | None, vmax: float | None = None,
                   rgb: tuple[int, int, int] = (220, 60, 40)) -> None:
        """Colour each token by ``values`` (0..vmax) as a white-to-``rgb`` ramp; None clears."""
        if values is None:
            for i in range(self.count()):
                self.item(i).setBackground(QBrush())
            return
        values = np.asarray(values, dtype=np.float64)
        top = float(vmax if vmax is not None else (np.nanmax(values) if values.size else 1.0))
        top = top if top > 0 else 1.0
        for i in range(min(self.count(), values.size)):
            a = float(np.clip(values[i] / top, 0.0, 1.0)) if np.isfinite(values[i]) else 0.0
            color = QColor(int(255 + (rgb[0] - 255) * a), int(255 + (rgb[1] - 255) * a),
                           int(255 + (rgb[2] - 255) * a))
            item = self.item(i)
            item.setBackground(QBrush(color))
            item.setForeground(QBrush(QColor("white" if a > 0.6 else "black")))

    def set_selected(self, position: int) -> None:
        if 0 <= position < self.count():
            self.setCurrentRow(position)
        else:
            self.clearSelection()

    def leaveEvent(self, event) -> None:
        self.sig_position_hovered.emit(-1)
        super().leaveEvent(event)
