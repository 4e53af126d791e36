"""The central prompt area: text, Run (Ctrl+Enter), top-k, and an inline message line."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

MAX_PROMPT_CHARS = 100_000  # sessions are held to the same bound (app.session_schema)


class PromptEdit(QPlainTextEdit):
    """A paste or drop that would make the prompt longer than ``max_chars`` is refused whole and
    reported by ``sig_refused``: a 256 KB one-line paste froze the window for seconds while Qt
    laid it out, and no model reads that many tokens."""

    sig_refused = Signal(int)  # the length the prompt would have had

    def __init__(self, max_chars: int = MAX_PROMPT_CHARS, parent=None) -> None:
        super().__init__(parent)
        self.max_chars = max_chars

    def insertFromMimeData(self, source) -> None:  # noqa: N802 (Qt's name)
        text = source.text() if source.hasText() else ""
        replaced = len(self.textCursor().selectedText())
        total = self.document().characterCount() - 1 - replaced + len(text)
        if total > self.max_chars:
            self.sig_refused.emit(total)
            return
        super().insertFromMimeData(source)


class PromptEditor(QWidget):
    """Emits ``sig_run(prompt, top_k)``; the app decides what running means."""

    sig_run = Signal(str, int, bool)  # prompt, top_k, truncate to the model context
    sig_bos = Signal(bool)  # the user turned the BOS token on or off

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("PromptEditor")
        self.edit = PromptEdit()
        self.edit.setObjectName("promptEdit")
        self.edit.setPlaceholderText("Type a prompt, e.g. The Eiffel Tower is in  (Ctrl+Enter runs it)")
        self.edit.setToolTip("The prompt every panel analyses. Ctrl+Enter runs it.")
        # Two lines tall: the panels below, not the text box, get the height of a laptop screen.
        lines = self.edit.fontMetrics().lineSpacing() * 2
        frame = 2 * self.edit.frameWidth() + 2 * int(self.edit.document().documentMargin())
        self.edit.setFixedHeight(lines + frame + 2)
        self.run_button = QPushButton("Run")
        self.run_button.setObjectName("runButton")
        self.run_button.setToolTip("Run the model on the prompt (Ctrl+Enter)")
        self.top_k = QSpinBox()
        self.top_k.setRange(1, 50)
        self.top_k.setValue(10)
        self.top_k.setPrefix("top-")
        self.top_k.setToolTip("How many next-token predictions to keep at each position")
        self.bos = QCheckBox("BOS")
        self.bos.setObjectName("bosCheck")
        self.bos.setChecked(True)
        self.bos.setToolTip("Prepend the beginning-of-sequence token to every prompt, in every "
                            "panel. Load a model to see its default.")
        self.bos.clicked.connect(lambda: self.sig_bos.emit(self.bos.isChecked()))
        self._bos_default = True
        self.message = QLabel()
        self.message.setObjectName("promptMessage")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #b00020;")
        self.message.hide()
        self.truncate_button = QPushButton("Truncate and run")
        self.truncate_button.setObjectName("truncateButton")
        self.truncate_button.setToolTip("Keep the start-of-text token and the last tokens that "
                                        "fit the model's context")
        self.truncate_button.hide()
        side = QVBoxLayout()
        side.setSpacing(2)
        side.addWidget(self.run_button)
        side.addWidget(self.top_k)
        side.addWidget(self.bos)
        side.addStretch(1)
        row = QHBoxLayout()
        row.addWidget(self.edit, 1)
        row.addLayout(side)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 2)
        lay.setSpacing(2)
        lay.addLayout(row)
        msg_row = QHBoxLayout()
        msg_row.addWidget(self.message, 1)
        msg_row.addWidget(self.truncate_button)
        lay.addLayout(msg_row)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.run_button.clicked.connect(self._emit_run)
        self.truncate_button.clicked.connect(lambda: self._emit_run(truncate=True))
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            QShortcut(QKeySequence(keys), self.edit, activated=self._emit_run)
        self.edit.textChanged.connect(self.clear_message)
        self.edit.sig_refused.connect(lambda n: self.show_message(
            f"Not pasted: the prompt would be {n:,} characters long, and prompts are limited "
            f"to {self.edit.max_chars:,}. Paste a shorter text."))

    def set_bos(self, default: bool, choice: bool | None) -> None:
        """Show the BOS policy: the model's ``default`` and the user's ``choice`` (None: the
        default)."""
        self._bos_default = default
        on = default if choice is None else choice
        self.bos.setChecked(on)
        self.bos.setText("BOS" if choice is None or choice == default else "BOS*")
        self.bos.setToolTip(
            f"Prepend the beginning-of-sequence token to every prompt, in every panel "
            f"(predictions, attention, attribution, patching pairs, induction).\nThis model's "
            f"default: {'on' if default else 'off'}"
            + ("" if choice is None or choice == default
               else f"; you turned it {'on' if choice else 'off'} (*)") + ".")

    def prompt(self) -> str:
        return self.edit.toPlainText()

    def set_prompt(self, text: str) -> None:
        if text != self.prompt():
            self.edit.setPlainText(text)

    def show_message(self, text: str, offer_truncate: bool = False, error: bool = True) -> None:
        """A problem with the prompt (red), or with ``error=False`` a note (grey)."""
        self.message.setStyleSheet("color: #b00020;" if error else "color: #555;")
        self.message.setText(text)
        self.message.setVisible(bool(text))
        self.truncate_button.setVisible(offer_truncate)

    def clear_message(self) -> None:
        self.message.clear()
        self.message.hide()
        self.truncate_button.hide()

    def _emit_run(self, truncate: bool = False) -> None:
        self.clear_message()
        self.sig_run.emit(self.prompt(), self.top_k.value(), truncate)
