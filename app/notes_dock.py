"""View > Notes: the researcher's own notes (plain text or Markdown), kept in the session.

The binding sits in ``window.bindings``, so the session's ``panels`` entry saves and restores it
like any panel's settings; notes are bounded (``MAX_NOTES_CHARS``) both ways, since a session file
is hostile data. The preview renders Markdown with Qt's own ``QTextDocument.setMarkdown`` in a
read-only browser that never follows links (a note's link cannot open anything by itself).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QDockWidget,
    QLabel,
    QPlainTextEdit,
    QStackedWidget,
    QTextBrowser,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from app.panels.base import PanelBinding

DOCK_NAME = "notesDock"
MAX_NOTES_CHARS = 100_000


class NotesPanel(QWidget):
    """An editor and its Markdown preview, one at a time; small enough for a laptop's side."""

    sig_changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("notesPanel")
        self.toolbar = QToolBar()
        self.toolbar.setObjectName("notesBar")
        self.action_preview = QAction("Preview", self, checkable=True)
        self.action_preview.setToolTip("Show the notes rendered as Markdown (Ctrl+Shift+M)")
        self.action_preview.setShortcut("Ctrl+Shift+M")
        self.action_preview.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.toolbar.addAction(self.action_preview)
        self.edit = QPlainTextEdit()
        self.edit.setObjectName("notesEdit")
        self.edit.setPlaceholderText("Notes for this session: hypotheses, what you tried, what "
                                     "you saw. Markdown works (# heading, **bold**, - lists).")
        self.preview = QTextBrowser()
        self.preview.setObjectName("notesPreview")
        self.preview.setOpenLinks(False)
        self.preview.setOpenExternalLinks(False)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.edit)
        self.stack.addWidget(self.preview)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.stack, 1)
        layout.addWidget(self.message)
        self.setMinimumSize(160, 120)
        self.action_preview.toggled.connect(self.set_preview)
        self.edit.textChanged.connect(self._text_changed)

    def text(self) -> str:
        return self.edit.toPlainText()

    def set_text(self, text: str) -> None:
        self.edit.setPlainText(text)
        if self.is_preview():
            self.preview.setMarkdown(text)

    def is_preview(self) -> bool:
        return self.stack.currentWidget() is self.preview

    def set_preview(self, on: bool) -> None:
        if on:
            self.preview.setMarkdown(self.text())
        self.stack.setCurrentWidget(self.preview if on else self.edit)
        if self.action_preview.isChecked() != on:
            self.action_preview.setChecked(on)
        self.sig_changed.emit()

    def show_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def _text_changed(self) -> None:
        n = len(self.text())
        self.show_message(f"The notes are {n:,} characters long; only the first "
                          f"{MAX_NOTES_CHARS:,} are saved with the session."
                          if n > MAX_NOTES_CHARS else "")
        self.sig_changed.emit()


class NotesBinding(PanelBinding):
    title = "Notes"
    object_name = DOCK_NAME
    tooltip = "Your notes for this session, saved with it (plain text or Markdown)"
    omit_when_empty = True  # no "notesDock" entry in a session without notes

    def create_widget(self) -> QWidget:
        return NotesPanel()

    def session_state(self) -> dict:
        text, preview = self.widget.text()[:MAX_NOTES_CHARS], self.widget.is_preview()
        return {"text": text, "preview": preview} if text or preview else {}

    def restore_session_state(self, state: dict) -> None:
        if not isinstance(state, dict):
            return
        text = state.get("text", "")
        text = text if isinstance(text, str) else ""
        cut = len(text) > MAX_NOTES_CHARS
        self.widget.set_text(text[:MAX_NOTES_CHARS])
        self.widget.set_preview(state.get("preview") is True)
        if cut:
            self.widget.show_message(f"The session's notes were longer than "
                                     f"{MAX_NOTES_CHARS:,} characters; the rest was left out.")
        if text.strip() and self.window is not None:
            show(self.window)


def show(window) -> None:
    """Bring the notes on screen, beside the predictions the first time."""
    dock = window.notes_dock
    predictions = window.docks.get("predictionsDock")
    if dock.isHidden() and predictions is not None and not predictions.isFloating() \
            and not dock.isFloating():
        window.tabifyDockWidget(predictions, dock)
    dock.show()
    dock.raise_()


def install(window, view_menu) -> NotesBinding:
    """Create the notes' binding and dock (hidden until asked for or a session has notes)."""
    binding = NotesBinding(window.controller, window)
    dock = QDockWidget(binding.title, window)
    dock.setObjectName(DOCK_NAME)
    dock.setWidget(binding.widget)
    dock.setToolTip(binding.tooltip)
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
    dock.hide()
    window.bindings.append(binding)
    window.notes_dock = dock
    window.notes = binding
    toggle = dock.toggleViewAction()
    toggle.setText("&Notes")
    toggle.setShortcut("Ctrl+Shift+N")
    view_menu.addAction(toggle)
    return binding
