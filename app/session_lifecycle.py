"""The session's life in the window: its name and modified marker in the title, New / Open /
Open Recent / drag-and-drop, and the Save / Discard / Cancel question before work is replaced.

"Modified" is a comparison, not a flag that every panel must remember to set: the session's
content (``session_actions.content_of``: prompt, pairs, plan, selection, notes, panel settings;
not the dock layout) against the content when it was last opened, saved or started. A debounced
check after any edit signal keeps the title's ``[*]`` current; asking and autosaving recompute
it, so a change no signal announced is still never lost.
"""

from __future__ import annotations

import json
import os

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtGui import QUndoStack
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QTableWidget,
    QTabWidget,
    QTextEdit,
    QWidget,
)

from app.session_io import SUFFIX

CHECK_DELAY_MS = 250
USER_INPUT = (QEvent.Type.KeyPress, QEvent.Type.MouseButtonPress, QEvent.Type.Drop,
              QEvent.Type.InputMethod)


def ask_unsaved(window) -> str:
    """Ask before unsaved work is replaced: "save", "discard" or "cancel"."""
    box = QMessageBox(window)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("Unsaved changes")
    name = window.lifecycle.display_name()
    box.setText(f"Save the changes to {name}?")
    box.setInformativeText("Your changes are lost if you don't save them.")
    box.setStandardButtons(QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                           | QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(QMessageBox.StandardButton.Save)
    box.setEscapeButton(QMessageBox.StandardButton.Cancel)
    answer = box.exec()
    box.deleteLater()
    return {QMessageBox.StandardButton.Save: "save",
            QMessageBox.StandardButton.Discard: "discard"}.get(
        QMessageBox.StandardButton(answer), "cancel")


def session_files(mime) -> list[str]:
    """Local ``*.lensbench`` files in a drag's data (anything else is not ours to take)."""
    if mime is None or not mime.hasUrls():
        return []
    return [u.toLocalFile() for u in mime.urls()
            if u.isLocalFile() and u.toLocalFile().lower().endswith(SUFFIX)]


class SessionLifecycle(QObject):
    def __init__(self, window, persist: bool = True) -> None:
        super().__init__(window)
        self.window = window
        self.persist = persist
        self.model_name = ""
        self._recovered = False  # restored from an autosave: unsaved until saved somewhere
        self._settling = False
        self._user_input = False
        self.defaults = self._content()  # what New goes back to
        self._baseline = self._key()
        self._check = QTimer(self)
        self._check.setSingleShot(True)
        self._check.setInterval(CHECK_DELAY_MS)
        self._check.timeout.connect(self.refresh)
        self._watch_edits()
        controller = window.controller
        controller.model_loaded.connect(self._model_loaded)
        controller.busy_changed.connect(self._busy_changed)
        window.setAcceptDrops(True)
        for target in (window, window.prompt_editor.edit.viewport(),
                       window.notes.widget.edit.viewport()):
            target.installEventFilter(self)
        self.refresh()

    # -- what "modified" means -----------------------------------------------------------------
    def _content(self) -> dict:
        from app.session_actions import content_of

        return content_of(self.window)

    def _key(self) -> str:
        content = self._content()
        selection = content.get("selection")
        if isinstance(selection, dict):
            selection.pop("prompt", None)  # follows the prompt that ran; the editor's is kept
        if not self.window.session_path:
            content.pop("model", None)  # an untitled session is not "changed" by a model choice
        return json.dumps(content, sort_keys=True, default=repr)

    def is_modified(self) -> bool:
        return self._recovered or self._key() != self._baseline

    def schedule_check(self, *_args) -> None:
        self._check.start()

    def refresh(self) -> None:
        self.window.setWindowModified(self.is_modified())
        self.update_title()

    def display_name(self) -> str:
        path = self.window.session_path
        return os.path.basename(path) if path else "Untitled"

    def update_title(self) -> None:
        model = f" — {self.model_name}" if self.model_name else ""
        self.window.setWindowTitle(f"{self.display_name()}[*] — Lensbench{model}")

    def mark_clean(self, settle: bool = False) -> None:
        """The current content is what the session file (or a fresh start) holds. ``settle``:
        an opened session's model load and prompt run are still to come; take the content again
        once they are done, unless the user touched anything meanwhile."""
        self._recovered = False
        self._baseline = self._key()
        self._settling = settle and self.window.controller.busy
        self._user_input = False
        self._set_input_watch(self._settling)
        self.refresh()

    def mark_recovered(self) -> None:
        self._recovered = True
        self.refresh()

    def _busy_changed(self, busy: bool) -> None:
        if busy:
            return
        if self._settling:
            self._settling = False
            self._set_input_watch(False)
            if not self._user_input and not self._recovered:
                self._baseline = self._key()
        self.schedule_check()

    def _model_loaded(self, info) -> None:
        self.model_name = str(getattr(info, "name", "") or "")
        self.update_title()  # at once: the title names the model shown
        self.schedule_check()

    def _set_input_watch(self, on: bool) -> None:
        app = QApplication.instance()
        if app is not None:
            if on:
                app.installEventFilter(self)
            else:
                app.removeEventFilter(self)

    def _watch_edits(self) -> None:
        """Any edit signal of the prompt, the selection, the notes or a panel's controls."""
        w = self.window
        w.prompt_editor.edit.textChanged.connect(self.schedule_check)
        w.prompt_editor.top_k.valueChanged.connect(self.schedule_check)
        w.controller.selection.changed.connect(self.schedule_check)
        w.controller.job_result.connect(self.schedule_check)
        w.controller.prompt_run.connect(self.schedule_check)
        for binding in w.bindings:
            for child in [binding.widget, *binding.widget.findChildren(QObject)]:
                for signal in _edit_signals(child):
                    signal.connect(self.schedule_check)
            for action in binding.edit_actions():  # undo/redo of the plan
                action.triggered.connect(self.schedule_check)

    # -- asking before work is replaced --------------------------------------------------------
    def maybe_save(self) -> bool:
        """True when the current work may be replaced (saved, discarded, or unchanged)."""
        if not self.persist or not self.is_modified():
            return True
        answer = ask_unsaved(self.window)
        if answer == "save":
            from app.session_actions import save

            return save(self.window)
        return answer == "discard"

    def confirm_close(self) -> bool:
        return self.maybe_save()

    # -- New / Open / Save ---------------------------------------------------------------------
    def new_session(self) -> bool:
        """Panels' settings as at start, no notes, the default prompt; the model stays."""
        if not self.maybe_save():
            return False
        from app.main import DEFAULT_PROMPT

        w = self.window
        panels = self.defaults.get("panels") or {}
        for binding in w.bindings:
            state = panels.get(binding.object_name)
            if isinstance(state, dict):
                binding.restore_session_state(json.loads(json.dumps(state)))
        w.notes.restore_session_state({})  # no notes (left out of the defaults when empty)
        w.controller.selection.load_dict(self.defaults.get("selection") or {})
        w.prompt_editor.top_k.setValue(int(self.defaults.get("top_k", 10)))
        w.prompt_editor.set_prompt(DEFAULT_PROMPT)
        w.session_path = None
        if w.controller.model_info is not None or w.controller.loading:
            w._run_prompt(DEFAULT_PROMPT, w.prompt_editor.top_k.value(), False)
        self.mark_clean(settle=True)
        return True

    def open_file(self, path: str, ask: bool = True, untitled: bool = False) -> bool:
        """Open ``path`` after asking about unsaved work. ``untitled``: an installed lesson or
        example, which Save must never write into. A file that cannot be opened changes nothing."""
        if ask and not self.maybe_save():
            return False
        from app.session_actions import open_path

        w = self.window
        notes = w.notes.session_state()
        w.notes.restore_session_state({})  # what a file without notes has
        if not open_path(w, path):
            w.notes.restore_session_state(notes)
            return False
        if untitled:
            w.session_path = None
        elif self.persist:
            from app.recent_files import add_recent

            add_recent(path)
        self.mark_clean(settle=True)
        return True

    def saved(self, path: str) -> None:
        if self.persist:
            from app.recent_files import add_recent

            add_recent(path)
        self.mark_clean()
        if self.persist:
            self.window.autosaver.remove()  # the work is in its file now

    # -- drag and drop -------------------------------------------------------------------------
    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt naming)
        kind = event.type()
        if self._settling and kind in USER_INPUT and isinstance(obj, QWidget) \
                and obj.window() is self.window:  # not a dialog's (e.g. crash recovery)
            self._user_input = True
        if kind in (QEvent.Type.DragEnter, QEvent.Type.DragMove, QEvent.Type.Drop) \
                and obj is not QApplication.instance():
            files = session_files(event.mimeData())
            if files:
                event.acceptProposedAction()
                if kind == QEvent.Type.Drop:
                    QTimer.singleShot(0, lambda p=files[0]: self.open_file(p))
                return True
        return False


def _edit_signals(obj) -> list:
    """The signals by which a control reports a user's edit, for the common Qt controls."""
    if isinstance(obj, QUndoStack):  # e.g. the patch plan: every edit is one command
        return [obj.indexChanged]
    if isinstance(obj, QTableWidget):  # e.g. the clean/corrupted pairs
        model = obj.model()
        return [model.dataChanged, model.rowsInserted, model.rowsRemoved]
    if isinstance(obj, QLineEdit):
        return [obj.textChanged]
    if isinstance(obj, (QPlainTextEdit, QTextEdit)):
        return [] if obj.isReadOnly() else [obj.textChanged]
    if isinstance(obj, QComboBox):
        return [obj.currentIndexChanged]
    if isinstance(obj, QAbstractSpinBox) and hasattr(obj, "valueChanged"):
        return [obj.valueChanged]
    if isinstance(obj, QAbstractButton) and obj.isCheckable():
        return [obj.toggled]
    if isinstance(obj, QTabWidget):
        return [obj.currentChanged]
    return []
