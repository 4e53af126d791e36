"""File > Open Recent: the last sessions opened or saved, kept in QSettings (at most 10).

Entries are only paths the user chose; a file that has gone is shown greyed, never opened, and
a list read back from the settings is checked like any other user data.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu

from app.layout_state import settings

KEY = "session/recent"
MAX_RECENT = 10


def recent_paths() -> list[str]:
    value = settings().value(KEY, [])
    if isinstance(value, str):  # QSettings returns a lone entry as a string
        value = [value]
    if not isinstance(value, list):
        return []
    return [p for p in value if isinstance(p, str) and p][:MAX_RECENT]


def _store(paths: list[str]) -> None:
    s = settings()
    s.setValue(KEY, paths[:MAX_RECENT])
    s.sync()


def add_recent(path: str) -> None:
    path = os.path.abspath(path)
    _store([path] + [p for p in recent_paths() if p != path])


def clear_recent() -> None:
    _store([])


def fill_menu(menu: QMenu, open_file: Callable[[str], object]) -> None:
    """Rebuild ``menu`` (called on aboutToShow, so it is never stale)."""
    menu.clear()
    paths = recent_paths()
    for i, path in enumerate(paths, 1):
        exists = os.path.isfile(path)
        name = os.path.basename(path)
        text = f"&{i % 10} {name.replace('&', '&&')}" + ("" if exists else " (missing)")
        action = QAction(text, menu)
        action.setToolTip(path)
        action.setStatusTip(path)
        action.setEnabled(exists)
        action.triggered.connect(lambda _checked=False, p=path: open_file(p))
        menu.addAction(action)
    if not paths:
        empty = menu.addAction("No recent sessions")
        empty.setEnabled(False)
    menu.addSeparator()
    clear = menu.addAction("&Clear list")
    clear.setEnabled(bool(paths))
    clear.triggered.connect(clear_recent)
