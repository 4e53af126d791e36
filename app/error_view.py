"""The one place errors are shown: a non-modal box with a hint, copyable traceback details."""

from __future__ import annotations

import dataclasses
import re

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from engine.safe_files import clip

MAX_ALSO = 4
# Last line of defence for text from files (a 100k-character model name made an 800x14098 px
# box; 512k characters crashed Qt's layout): every shown string is clipped.
MAX_MESSAGE = 1000
MAX_DETAILS = 20_000


class ErrorView:
    """Keeps one non-modal QMessageBox and reuses it, so errors never pile up or block.

    While the box is open, later errors are added under the first one ("Then: ...") instead of
    replacing it: the first is usually the cause (a model that failed to load) and the rest its
    consequences. Closing the box starts afresh.
    """

    def __init__(self, parent) -> None:
        self.parent = parent
        self.box: QMessageBox | None = None
        self.history: list = []
        self._shown: list = []  # (channel, info) in the open box, first = main text

    def show(self, channel: str, info) -> None:
        if dataclasses.is_dataclass(info):
            info = dataclasses.replace(info, message=clip(info.message, MAX_MESSAGE),
                                       hint=clip(info.hint, MAX_MESSAGE),
                                       traceback=clip(info.traceback, MAX_DETAILS))
        self.history.append((channel, info))
        if self.box is None:
            self.box = QMessageBox(self.parent)
            self.box.setObjectName("errorBox")
            self.box.setWindowModality(Qt.WindowModality.NonModal)
            self.box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.box.setStandardButtons(QMessageBox.StandardButton.Close)
        if not self.box.isVisible():
            self._shown = []
        if any(i.message == info.message for _c, i in self._shown):
            self.box.raise_()
            return
        self._shown.append((channel, info))
        first_channel, first = self._shown[0]
        icon = QMessageBox.Icon.Warning if first.kind in ("input", "model", "too_long") \
            else QMessageBox.Icon.Critical
        self.box.setIcon(icon)
        self.box.setWindowTitle("Lensbench: " + ("could not load the model" if first.kind == "model"
                                                 else "something went wrong"))
        self.box.setText(_breakable(first.message))
        also = [f"Then: {i.message}" for _c, i in self._shown[1:1 + MAX_ALSO]]
        self.box.setInformativeText(_breakable("\n\n".join([first.hint, *also]).strip()))
        self.box.setDetailedText("\n\n".join(f"[{c}] {i.type}: {i.message}\n\n{i.traceback}"
                                              for c, i in self._shown))
        self.box.show()
        self.box.raise_()

    @property
    def visible_text(self) -> str:
        text = self.box.text() if self.box is not None and self.box.isVisible() else ""
        return text.replace("\u200b", "")  # the text as written, without the break points


def _breakable(text: str) -> str:
    """Long unbroken runs (a path, a name from a file) get zero-width break points: Qt wraps
    only at spaces, and a 1000-character word is cut off at the box's edge."""
    return re.sub(r"\S{60}", lambda m: m.group(0) + "\u200b", text)
