"""Autosave per running instance, so a crash never loses work and never loses it twice.

Each window that persists gets its own ``<app data>/autosave/<id>.lensbench`` and holds
``<id>.lock`` (a QLockFile) while it runs. It writes only its own file, and only while the session
has unsaved changes; a clean exit removes both. An autosave whose lock is not held by a running
process was left by a crash: ``app/recovery.py`` offers it back and nothing here overwrites it.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from PySide6.QtCore import QLockFile, QObject, QStandardPaths, QTimer

from app.session_io import SUFFIX, SessionError, save_session

INTERVAL_MS = 60_000
LOCK_SUFFIX = ".lock"


def interval_ms() -> int:
    """The autosave period; ``LENSBENCH_AUTOSAVE_MS`` shortens it (tests, impatient users)."""
    try:
        value = int(os.environ.get("LENSBENCH_AUTOSAVE_MS", INTERVAL_MS))
    except ValueError:
        return INTERVAL_MS
    return max(100, value)


def app_data_dir() -> Path:
    return Path(QStandardPaths.writableLocation(
        QStandardPaths.StandardLocation.AppDataLocation) or Path.home() / ".lensbench")


def autosave_dir() -> Path:
    return app_data_dir() / "autosave"


def legacy_autosave_path() -> Path:
    """The single autosave file of earlier versions (offered by File > Recover, never written)."""
    return app_data_dir() / "autosave.lensbench"


class Autosaver(QObject):
    """Writes this instance's autosave every ``interval_ms()`` while the session is modified.

    ``active`` is False for windows that must leave no trace (--screenshot, --self-test): then no
    folder, lock or file is ever created.
    """

    def __init__(self, window, active: bool = True) -> None:
        super().__init__(window)
        self.window = window
        self.active = active
        self.instance_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.lock: QLockFile | None = None
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms())
        self.timer.timeout.connect(self.tick)
        if active:
            self._take_lock()
            self.timer.start()

    @property
    def path(self) -> Path:
        return autosave_dir() / f"{self.instance_id}{SUFFIX}"

    @property
    def lock_path(self) -> Path:
        return autosave_dir() / f"{self.instance_id}{LOCK_SUFFIX}"

    def _take_lock(self) -> None:
        try:
            autosave_dir().mkdir(parents=True, exist_ok=True)
        except OSError:
            return  # no autosave folder: the app still works, it just cannot autosave
        lock = QLockFile(str(self.lock_path))
        lock.setStaleLockTime(0)
        if lock.tryLock(0):
            self.lock = lock

    def tick(self) -> None:
        """Save while there are unsaved changes; drop the file once the work is saved."""
        lifecycle = getattr(self.window, "lifecycle", None)
        if lifecycle is None or lifecycle.is_modified():
            self.save_now()
        else:
            self.remove()

    def save_now(self) -> bool:
        if not self.active:
            return False
        from app.session_actions import manifest_of

        try:
            autosave_dir().mkdir(parents=True, exist_ok=True)
            if self.lock is None:
                self._take_lock()
            save_session(self.path, manifest_of(self.window))
        except (OSError, SessionError):
            return False  # autosave must never interrupt the user
        return True

    def remove(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass

    def finish(self) -> None:
        """A clean exit: the work was saved or discarded, so its autosave and lock go."""
        self.timer.stop()
        if not self.active:
            return
        self.remove()
        if self.lock is not None:
            self.lock.unlock()
            self.lock = None
