"""Guard against the PySide6 6.12.0 bug that drops a reference to None on every void call.

On Python < 3.12 that exhausts None's reference count and aborts the app after enough repaints
and label updates, so pyproject excludes 6.12.0 there. This test fails if a bad build returns.
"""

from __future__ import annotations

import sys

from PySide6.QtWidgets import QLabel


def test_void_calls_keep_none_refcount(qtbot):
    label = QLabel()
    qtbot.addWidget(label)
    before = sys.getrefcount(None)
    for _ in range(2000):
        label.setText("x")
    assert sys.getrefcount(None) - before > -100
