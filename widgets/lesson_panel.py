"""The Lessons side panel: pick a lesson, open its session, follow its steps.

A view only: the binding (app/lesson_dock.py) gives it the lessons and each step's check state,
and performs what its signals ask for.
"""

from __future__ import annotations

from html import escape

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from widgets.lesson_step import StepCard


class LessonPanel(QWidget):
    sig_lesson_selected = Signal(int)  # index in the list given to set_lessons
    sig_open_lesson = Signal(int)  # open the lesson's session (prompt, panels, model)
    sig_show_me = Signal(int, int)  # lesson index, step index

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("LessonPanel")
        self.picker = QComboBox()
        self.picker.setObjectName("lessonPicker")
        self.picker.setToolTip("The guided lessons, on the bundled model organism")
        self.open_button = QPushButton("Start lesson")
        self.open_button.setObjectName("startLesson")
        self.open_button.setToolTip("Open the lesson's session: it sets the model, the prompt and "
                                    "the panels' settings (your current session is not saved)")
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.progress = QProgressBar()
        self.progress.setObjectName("lessonProgress")
        self.progress.setTextVisible(True)
        self.progress.setMaximumHeight(16)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #b00020;")
        self.message.hide()
        top = QHBoxLayout()
        top.addWidget(self.picker, 1)
        top.addWidget(self.open_button)
        self.steps_box = QWidget()
        self.steps_layout = QVBoxLayout(self.steps_box)
        self.steps_layout.setContentsMargins(0, 0, 0, 0)
        self.steps_layout.setSpacing(6)
        self.scroll = QScrollArea()
        self.scroll.setObjectName("lessonSteps")
        self.scroll.setWidgetResizable(True)
        self.scroll.setWidget(self.steps_box)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.summary)
        lay.addWidget(self.progress)
        lay.addWidget(self.message)
        lay.addWidget(self.scroll, 1)
        self.cards: list[StepCard] = []
        self.picker.currentIndexChanged.connect(self.sig_lesson_selected)
        self.open_button.clicked.connect(lambda: self.sig_open_lesson.emit(self.current()))

    def current(self) -> int:
        return self.picker.currentIndex()

    def set_lessons(self, titles: list[str]) -> None:
        self.picker.blockSignals(True)
        self.picker.clear()
        self.picker.addItems(titles)
        self.picker.blockSignals(False)

    def show_lesson(self, summary: str, minutes: int, steps: list[tuple[str, str, str, bool]]):
        """``steps``: (title, do, see, has_show_me) each."""
        while self.cards:
            card = self.cards.pop()
            self.steps_layout.removeWidget(card)
            card.deleteLater()
        while self.steps_layout.count():
            self.steps_layout.takeAt(0)
        about = f" About {minutes} minutes." if minutes else ""
        self.summary.setText(f"{escape(summary)}<i>{about}</i>")
        lesson = self.current()
        for i, (title, do, see, can_show) in enumerate(steps):
            card = StepCard(i + 1, title, do, see, can_show)
            card.sig_show_me.connect(lambda i=i: self.sig_show_me.emit(lesson, i))
            self.cards.append(card)
            self.steps_layout.addWidget(card)
        self.steps_layout.addStretch(1)
        self.progress.setRange(0, max(1, len(steps)))
        self.set_message("")
        self._update_progress()

    def set_step_state(self, index: int, state: str, text: str) -> None:
        if 0 <= index < len(self.cards):
            self.cards[index].set_state(state, text)
            self._update_progress()

    def set_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def passed(self) -> int:
        return sum(card.state == "pass" for card in self.cards)

    def _update_progress(self) -> None:
        self.progress.setValue(self.passed())
        self.progress.setFormat(f"{self.passed()} of {len(self.cards)} checks passed")
