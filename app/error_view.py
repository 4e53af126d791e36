"""The one place errors are shown: a non-modal box with a hint, copyable traceback details."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox


class ErrorView:
    """Keeps one non-modal QMessageBox and reuses it, so errors never pile up or block."""

    def __init__(self, parent) -> None:
        self.parent = parent
        self.box: QMessageBox | None = None
        self.history: list = []

    def show(self, channel: str, info) -> None:
        self.history.append((channel, info))
        if self.box is None:
            self.box = QMessageBox(self.parent)
            self.box.setObjectName("errorBox")
            self.box.setWindowModality(Qt.WindowModality.NonModal)
            self.box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.box.setStandardButtons(QMessageBox.StandardButton.Close)
        icon = QMessageBox.Icon.Warning if info.kind in ("input", "model", "too_long") \
            else QMessageBox.Icon.Critical
        self.box.setIcon(icon)
        self.box.setWindowTitle("Lensbench: " + ("could not load the model" if info.kind == "model"
                                                 else "something went wrong"))
        self.box.setText(info.message)
        self.box.setInformativeText(info.hint)
        self.box.setDetailedText(f"[{channel}] {info.type}: {info.message}\n\n{info.traceback}")
        self.box.show()
        self.box.raise_()

    @property
    def visible_text(self) -> str:
        return self.box.text() if self.box is not None and self.box.isVisible() else ""
