"""Window and dock layout saved in QSettings, versioned so a stale layout is ignored, not misread."""

from __future__ import annotations

from PySide6.QtCore import QSettings

LAYOUT_VERSION = 1


def settings() -> QSettings:
    return QSettings("Lensbench", "Lensbench")


def save_layout(window) -> None:
    s = settings()
    s.setValue("window/layout_version", LAYOUT_VERSION)
    s.setValue("window/geometry", window.saveGeometry())
    s.setValue("window/state", window.saveState(LAYOUT_VERSION))


def restore_layout(window) -> bool:
    s = settings()
    if int(s.value("window/layout_version", 0) or 0) != LAYOUT_VERSION:
        return False
    geometry, state = s.value("window/geometry"), s.value("window/state")
    ok = True
    if geometry is not None:
        ok &= bool(window.restoreGeometry(geometry))
    if state is not None:
        ok &= bool(window.restoreState(state, LAYOUT_VERSION))
    return ok
