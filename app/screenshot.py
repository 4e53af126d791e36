"""Save a PNG of the window once every job has finished, then quit (``--screenshot``)."""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication


def save_when_idle(window, path: str, settle_ms: int = 300, timeout_ms: int = 300_000) -> None:
    state = {"done": False}

    def shoot() -> None:
        if state["done"]:
            return
        state["done"] = True
        window.grab().save(path)
        print(f"saved {path}")
        window.close()
        QApplication.instance().quit()

    def check() -> None:
        if not window.controller.busy:
            QTimer.singleShot(settle_ms, lambda: None if window.controller.busy else shoot())

    window.controller.busy_changed.connect(lambda busy: None if busy else check())
    QTimer.singleShot(timeout_ms, shoot)
    check()
