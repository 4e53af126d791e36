"""Pinned heads: a Pin button for the focused head and one chip per pinned head.

Pinned heads are the ones a study is about; a session keeps their attention patterns (the rest
would be hundreds of megabytes on a long prompt). Clicking a chip focuses that head.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QToolButton, QWidget

MAX_PINS = 64
CHIPS_SHOWN = 6  # more pins are listed in the "+n" chip's menu


class PinnedHeads(QWidget):
    sig_changed = Signal(object)  # list of (layer, head): the user pinned or unpinned one
    sig_focus = Signal(int, int)  # a chip was clicked: focus that head

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._focused = (0, 0)
        self._pinned: list[tuple[int, int]] = []
        self.pin_button = QToolButton()
        self.pin_button.setObjectName("attentionPin")
        self.pin_button.setCheckable(True)
        self.pin_button.setToolTip("Pin the focused head: a session saves the attention "
                                   "patterns of pinned heads, and their chips focus them again")
        self._chips = QWidget()
        self._chip_row = QHBoxLayout(self._chips)
        self._chip_row.setContentsMargins(0, 0, 0, 0)
        self._chip_row.setSpacing(2)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        lay.addWidget(self.pin_button)
        lay.addWidget(self._chips)
        self.pin_button.toggled.connect(self._toggled)
        self._sync()
        self._rebuild_chips()

    def pinned(self) -> list[tuple[int, int]]:
        return list(self._pinned)

    def set_pinned(self, heads) -> None:
        """Replace the pinned heads (no signal: a session or a model switch sets them)."""
        out: list[tuple[int, int]] = []
        for layer, head in heads:
            if (int(layer), int(head)) not in out:
                out.append((int(layer), int(head)))
        self._pinned = out[:MAX_PINS]
        self._sync()
        self._rebuild_chips()

    def set_focused(self, layer: int, head: int) -> None:
        self._focused = (int(layer), int(head))
        self._sync()

    def chip(self, layer: int, head: int) -> QToolButton | None:
        """The chip of a pinned head (for tests and tools), or None."""
        for i in range(self._chip_row.count()):
            w = self._chip_row.itemAt(i).widget()
            if isinstance(w, QToolButton) and w.property("head") == [layer, head]:
                return w
        return None

    def _toggled(self, checked: bool) -> None:
        head = self._focused
        if checked and head not in self._pinned and len(self._pinned) < MAX_PINS:
            self._pinned.append(head)
        elif not checked and head in self._pinned:
            self._pinned.remove(head)
        self._sync()
        self._rebuild_chips()
        self.sig_changed.emit(self.pinned())

    def _sync(self) -> None:
        layer, head = self._focused
        on = self._focused in self._pinned
        self.pin_button.blockSignals(True)
        self.pin_button.setChecked(on)
        self.pin_button.blockSignals(False)
        self.pin_button.setText(f"Unpin L{layer}H{head}" if on else f"Pin L{layer}H{head}")

    def _rebuild_chips(self) -> None:
        """One chip per pinned head (only when the pins change, not on every focus)."""
        while self._chip_row.count():
            w = self._chip_row.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        for la, h in self._pinned[:CHIPS_SHOWN]:
            chip = QToolButton()
            chip.setText(f"L{la}H{h}")
            chip.setProperty("head", [la, h])
            chip.setAutoRaise(True)
            chip.setStyleSheet("QToolButton { color: #8a5a00; font-weight: bold; }")
            chip.setToolTip(f"Pinned head L{la}H{h}: click to focus it")
            chip.clicked.connect(lambda _=False, la=la, h=h: self.sig_focus.emit(la, h))
            self._chip_row.addWidget(chip)
        rest = self._pinned[CHIPS_SHOWN:]
        if rest:
            more = QLabel(f"+{len(rest)}")
            more.setToolTip("Also pinned: " + ", ".join(f"L{la}H{h}" for la, h in rest))
            self._chip_row.addWidget(more)
