"""The scroll area around each dock's panel: it scrolls only below the panel's minimum size.

A dock must be able to shrink below its panel (small screens, docks side by side), so each panel
sits in a scroll area. A plain ``QScrollArea(widgetResizable=True)`` sizes a panel whose layout has
height-for-width (any word-wrapped label) to its *preferred* height, so a panel that fits showed
a vertical scrollbar and hid its bottom row on a 1366x768 screen. This one gives the panel exactly
the viewport, and scrolls only when the viewport is smaller than the panel's minimum size.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QSize
from PySide6.QtWidgets import QFrame, QScrollArea, QStyle


class PanelScrollArea(QScrollArea):
    def __init__(self, panel, parent=None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setWidgetResizable(False)
        self.setWidget(panel)
        panel.installEventFilter(self)

    def minimum_panel_size(self) -> QSize:
        panel = self.widget()
        return panel.minimumSizeHint().expandedTo(panel.minimumSize())

    def fit(self) -> None:
        panel = self.widget()
        if panel is None:
            return
        room = self.maximumViewportSize()  # the viewport with no scrollbar shown
        need = self.minimum_panel_size()
        bar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)
        w, h = room.width(), room.height()
        if need.width() > w:
            h -= bar  # the horizontal bar takes height
        if need.height() > h:
            w -= bar
            if need.width() > w and need.width() <= room.width():
                h -= bar
        size = QSize(max(w, need.width()), max(h, need.height()))
        if panel.size() != size:
            panel.resize(size)

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        super().resizeEvent(event)
        self.fit()

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt naming)
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.fit()  # the panel's minimum size may have changed
        return super().eventFilter(obj, event)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt naming)
        panel = self.widget()
        return panel.sizeHint() if panel is not None else super().sizeHint()
