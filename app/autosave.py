"""Autosave: the session is written every minute (and on close) to the platform's app-data
folder, never beside the app; File > Recover autosaved session reopens it."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QStandardPaths, QTimer

from app.session_io import SessionError, save_session

INTERVAL_MS = 60_000


def autosave_path() -> Path:
    folder = Path(QStandardPaths.writableLocation(
        QStandardPaths.StandardLocation.AppDataLocation) or Path.home() / ".lensbench")
    return folder / "autosave.lensbench"


class Autosaver(QObject):
    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.timer = QTimer(self)
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(self.save_now)
        self.timer.start()

    def save_now(self) -> bool:
        from app.session_actions import manifest_of

        path = autosave_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_session(path, manifest_of(self.window))
        except (OSError, SessionError):
            return False  # autosave must never interrupt the user
        return True
