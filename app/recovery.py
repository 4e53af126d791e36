"""Crash recovery: find the autosaves of instances that did not exit cleanly and offer them back.

An autosave is a crash's when its instance's lock (``<id>.lock``, see app/autosave.py) is not
held by a running process. Listing one takes its lock, so two windows never restore the same
file; *Later* lets the lock go and the file is offered again at the next start. Autosaves are
read as hostile files (``load_session``) and a file that cannot be read is listed as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import QLockFile, Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
)

from app.autosave import LOCK_SUFFIX, autosave_dir, legacy_autosave_path
from app.session_io import SUFFIX, SessionError, load_session

PROMPT_SHOWN = 70  # characters of the prompt shown per entry


@dataclass
class CrashedAutosave:
    path: Path
    saved_at: datetime
    prompt: str
    readable: bool
    lock: QLockFile | None = field(default=None, repr=False)

    def label(self) -> str:
        when = self.saved_at.strftime("%Y-%m-%d %H:%M:%S")
        if not self.readable:
            return f"{when}  (unreadable file)"
        prompt = self.prompt if len(self.prompt) <= PROMPT_SHOWN else \
            self.prompt[:PROMPT_SHOWN - 1] + "…"
        return f"{when}  {prompt or '(empty prompt)'}"

    def release(self) -> None:
        if self.lock is not None:
            self.lock.unlock()
            self.lock = None

    def discard(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        self.release()


def _describe(path: Path, lock: QLockFile | None) -> CrashedAutosave:
    try:
        saved_at = datetime.fromtimestamp(path.stat().st_mtime)
    except OSError:
        saved_at = datetime.now()
    try:
        manifest, _ = load_session(path)
        prompt, readable = str(manifest.get("prompt", "")), True
    except (SessionError, OSError, TypeError, ValueError):
        prompt, readable = "", False
    return CrashedAutosave(path, saved_at, " ".join(prompt.split()), readable, lock)


def crashed_autosaves(folder: Path | None = None, include_legacy: bool = False) \
        -> list[CrashedAutosave]:
    """Autosaves whose instance is gone, newest first; each holds its lock until released."""
    folder = folder or autosave_dir()
    found: list[CrashedAutosave] = []
    try:
        candidates = sorted(folder.glob(f"*{SUFFIX}"))
    except OSError:
        candidates = []
    for path in candidates:
        if not path.is_file() or path.is_symlink():
            continue
        lock = QLockFile(str(path.with_suffix(LOCK_SUFFIX)))
        lock.setStaleLockTime(0)  # alive means "its process runs", however old the lock
        if lock.tryLock(0):  # nobody holds it: that instance ended without cleaning up
            found.append(_describe(path, lock))
    try:  # stale locks of instances that crashed before their first autosave
        for lock_path in folder.glob(f"*{LOCK_SUFFIX}"):
            if not lock_path.with_suffix(SUFFIX).exists():
                lock = QLockFile(str(lock_path))
                lock.setStaleLockTime(0)
                if lock.tryLock(0):
                    lock.unlock()
    except OSError:
        pass
    legacy = legacy_autosave_path()
    if include_legacy and legacy.is_file() and not legacy.is_symlink():
        found.append(_describe(legacy, None))
    found.sort(key=lambda c: c.saved_at, reverse=True)
    return found


class RecoveryDialog(QDialog):
    """Lists crashed autosaves (time and prompt): Restore, Discard or Later."""

    def __init__(self, entries: list[CrashedAutosave], parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Recover unsaved work")
        self.entries = list(entries)
        self.chosen: CrashedAutosave | None = None
        layout = QVBoxLayout(self)
        text = QLabel("Lensbench did not close normally. These sessions were saved automatically "
                      "and hold work that was not saved:")
        text.setWordWrap(True)
        layout.addWidget(text)
        self.list = QListWidget()
        self.list.setMinimumWidth(460)
        layout.addWidget(self.list)
        buttons = QDialogButtonBox()
        self.restore_button = QPushButton("&Restore")
        self.discard_button = QPushButton("&Discard")
        self.later_button = QPushButton("&Later")
        self.restore_button.setToolTip("Open the selected session in this window")
        self.discard_button.setToolTip("Delete the selected autosave for good")
        self.later_button.setToolTip("Keep them; they are offered again at the next start")
        buttons.addButton(self.restore_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(self.discard_button, QDialogButtonBox.ButtonRole.DestructiveRole)
        buttons.addButton(self.later_button, QDialogButtonBox.ButtonRole.RejectRole)
        layout.addWidget(buttons)
        self.restore_button.clicked.connect(self._restore)
        self.discard_button.clicked.connect(self._discard)
        self.later_button.clicked.connect(self.reject)
        self.list.itemDoubleClicked.connect(lambda _item: self._restore())
        self._fill()

    def _fill(self) -> None:
        self.list.clear()
        for entry in self.entries:
            item = QListWidgetItem(entry.label())
            item.setToolTip(str(entry.path))
            if not entry.readable:
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled)
            self.list.addItem(item)
        first = next((i for i, e in enumerate(self.entries) if e.readable), 0)
        self.list.setCurrentRow(first if self.entries else -1)
        self.restore_button.setEnabled(any(e.readable for e in self.entries))

    def current(self) -> CrashedAutosave | None:
        row = self.list.currentRow()
        return self.entries[row] if 0 <= row < len(self.entries) else None

    def _restore(self) -> None:
        entry = self.current()
        if entry is not None and entry.readable:
            self.chosen = entry
            self.accept()

    def _discard(self) -> None:
        entry = self.current()
        if entry is None:
            return
        entry.discard()
        self.entries.remove(entry)
        if not self.entries:
            self.reject()
        else:
            self._fill()

    def done(self, result: int) -> None:
        for entry in self.entries:  # Later (or the rest after a Restore): offered next time
            if entry is not self.chosen:
                entry.release()
        super().done(result)


def restore(window, entry: CrashedAutosave) -> bool:
    """Open ``entry`` as unsaved work; only once this window's own autosave holds it is the
    crashed file deleted (a crash in between still leaves one copy)."""
    from app.session_actions import open_path

    ok = open_path(window, str(entry.path))
    if not ok:
        entry.release()
        return False
    window.session_path = None  # saving asks where: never into the autosave folder
    window.lifecycle.mark_recovered()
    if window.autosaver.save_now():
        entry.discard()
    else:  # this window cannot autosave: the crashed copy stays until the work is saved
        entry.release()
    window.statusBar().showMessage("Restored unsaved work; save it with File > Save As…", 8000)
    return True


def offer(window, entries: list[CrashedAutosave]) -> bool:
    """Show the dialog for ``entries``; True when one was restored."""
    dialog = RecoveryDialog(entries, window)
    dialog.exec()
    chosen = dialog.chosen
    dialog.deleteLater()
    if chosen is None:
        return False
    if not window.lifecycle.maybe_save():
        chosen.release()
        return False
    return restore(window, chosen)


def offer_at_start(window) -> bool:
    """At start-up: only crashes of this version's instances, and only if there are any."""
    entries = crashed_autosaves()
    return offer(window, entries) if entries else False


def recover_action(window) -> None:
    """File > Recover unsaved work…: the same dialog, also listing an older version's autosave."""
    entries = crashed_autosaves(include_legacy=True)
    if not entries:
        window.statusBar().showMessage("There is no unsaved work from a previous run to recover.",
                                       5000)
        return
    offer(window, entries)
