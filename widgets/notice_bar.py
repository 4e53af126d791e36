"""A slim bar above a panel that says something about its results and offers one action.

Used when a session's saved results are not shown (computed on another model): the bar says why
and offers to recompute, instead of computing behind the user's back. Like a browser's info bar:
one line of text, one button, a close box; hidden until needed.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton


class NoticeBar(QFrame):
    sig_action = Signal()  # the action button was clicked (the bar hides itself first)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("noticeBar")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setStyleSheet("#noticeBar { background: #fff4d6; border: 1px solid #e0c26a; }"
                           "#noticeBar QLabel { color: #5a4300; }")
        self.label = QLabel()
        self.label.setObjectName("noticeText")
        self.label.setWordWrap(True)
        self.action_button = QPushButton()
        self.action_button.setObjectName("noticeAction")
        self.close_button = QToolButton()
        self.close_button.setObjectName("noticeClose")
        self.close_button.setText("×")
        self.close_button.setToolTip("Dismiss")
        self.close_button.setAutoRaise(True)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(8, 3, 3, 3)
        lay.addWidget(self.label, 1)
        lay.addWidget(self.action_button)
        lay.addWidget(self.close_button)
        self.action_button.clicked.connect(self._act)
        self.close_button.clicked.connect(self.dismiss)
        self.hide()

    def show_notice(self, text: str, action: str = "", tooltip: str = "") -> None:
        self.label.setText(text)
        self.action_button.setText(action)
        self.action_button.setToolTip(tooltip)
        self.action_button.setVisible(bool(action))
        self.show()

    def dismiss(self) -> None:
        self.hide()

    def text(self) -> str:
        """The notice shown now ("" when the bar is hidden)."""
        return "" if self.isHidden() else self.label.text()

    def _act(self) -> None:
        self.hide()
        self.sig_action.emit()
