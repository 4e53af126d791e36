"""One step of a lesson: what to do, what to look for, and its live check (grey, green or red)."""

from __future__ import annotations

from html import escape

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

# state -> (symbol, colour, words for screen readers and tooltips)
STATES = {
    "pending": ("\u25cb", "#6b6b6b", "not checked yet"),
    "pass": ("\u2714", "#1b7a2e", "passed"),
    "fail": ("\u2716", "#b00020", "not as expected"),
}


class StepCard(QFrame):
    """Emits ``sig_show_me`` when the student asks the app to do this step."""

    sig_show_me = Signal()

    def __init__(self, number: int, title: str, do: str, see: str, can_show: bool,
                 parent=None) -> None:
        super().__init__(parent)
        self.setObjectName(f"lessonStep{number}")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.title = QLabel(f"<b>{number}. {escape(title)}</b>")
        self.do = QLabel(f"<b>Do:</b> {escape(do)}")
        self.see = QLabel(f"<b>You should see:</b> {escape(see)}")
        for label in (self.title, self.do, self.see):
            label.setWordWrap(True)
            label.setTextFormat(Qt.TextFormat.RichText)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.symbol = QLabel()
        self.symbol.setObjectName("checkSymbol")
        self.symbol.setFixedWidth(18)
        self.symbol.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignHCenter)
        self.check = QLabel()
        self.check.setObjectName("checkText")
        self.check.setWordWrap(True)
        self.show_me = QPushButton("Show me")
        self.show_me.setObjectName("showMe")
        self.show_me.setToolTip("Let Lensbench do this step for you, then look at the result")
        self.show_me.setVisible(can_show)
        self.show_me.clicked.connect(self.sig_show_me)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.symbol)
        row.addWidget(self.check, 1)
        row.addWidget(self.show_me, 0, Qt.AlignmentFlag.AlignTop)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(8, 6, 8, 6)
        lay.setSpacing(3)
        lay.addWidget(self.title)
        lay.addWidget(self.do)
        lay.addWidget(self.see)
        lay.addLayout(row)
        self.state = ""
        self.set_state("pending", "")

    def set_state(self, state: str, text: str) -> None:
        symbol, colour, words = STATES[state]
        self.state = state
        self.symbol.setText(symbol)
        self.symbol.setStyleSheet(f"color: {colour}; font-weight: bold;")
        self.symbol.setToolTip(f"Check {words}")
        self.check.setText(f"<span style='color:{colour}'>{escape(text)}</span>")
        self.check.setAccessibleName(f"Check {words}: {text}")
