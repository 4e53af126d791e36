"""The app's identity on the desktop: name, version, icon, and sessions opened by the OS.

On macOS a double-clicked ``*.lensbench`` file arrives as a QFileOpenEvent, not on the command
line; ``FileOpenFilter`` opens it in the main window (a session opened before the window exists
is kept until it does).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QIcon

from app.version import __version__

ICONS = Path(__file__).resolve().parent.parent / "resources" / "icons"


def app_icon() -> QIcon:
    icon = QIcon()
    for name in ("lensbench.svg", "lensbench.png"):
        path = ICONS / name
        if path.is_file():
            icon.addFile(str(path))
    return icon


def set_identity(app) -> None:
    """Names used by QSettings/QStandardPaths, the window icon, and the .desktop file's name
    (Wayland and taskbars match windows to lensbench.desktop with it)."""
    app.setApplicationName("Lensbench")
    app.setOrganizationName("Lensbench")
    app.setApplicationVersion(__version__)
    app.setDesktopFileName("lensbench")
    icon = app_icon()
    if not icon.isNull():
        app.setWindowIcon(icon)


class FileOpenFilter(QObject):
    def __init__(self, app, window=None) -> None:
        super().__init__(app)
        self.window = window
        self.pending: list[str] = []
        app.installEventFilter(self)

    def set_window(self, window) -> None:
        self.window = window
        pending, self.pending = self.pending, []
        for path in pending:
            self._open(path)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt naming)
        if event.type() == QEvent.Type.FileOpen:
            path = event.file()
            if path:
                if self.window is None:
                    self.pending.append(path)
                else:
                    self._open(path)
                return True
        return super().eventFilter(obj, event)

    def _open(self, path: str) -> None:
        self.window.lifecycle.open_file(path)  # asks first if there is unsaved work
