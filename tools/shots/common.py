"""Shared set-up of the screenshot scripts: the real main window on a model, offscreen."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def wait(app, predicate, timeout_s: float = 600.0) -> None:
    """Run the event loop until ``predicate()`` holds (scripts only; tests use waitSignal)."""
    end = time.monotonic() + timeout_s
    while not predicate():
        app.processEvents()
        if time.monotonic() > end:
            raise TimeoutError("timed out waiting for the app")
        time.sleep(0.01)


def open_window(model: str, width: int, height: int):
    """Return (app, window) with ``model`` (folder, or "" for the bundled organism) loaded on
    the CPU, or (app, None) after printing the load error."""
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from engine.model_sources import ModelSpec

    app = QApplication.instance() or QApplication([])
    win = MainWindow(restore_layout=False, persist=False)  # screenshots leave no trace
    win.resize(width, height)
    win.show()
    loaded, errors = [], []
    win.controller.model_loaded.connect(loaded.append)
    win.controller.error.connect(lambda ch, info: errors.append(info))
    win.load_model(ModelSpec.parse(model or None, device="cpu"))
    wait(app, lambda: loaded or errors)
    if errors:
        print(errors[0].message, file=sys.stderr)
        return app, None
    return app, win


def shot_parser(doc: str | None, model_help: str = "a model folder (default: bundled organism)"):
    """The options every screenshot script takes: --model and --out."""
    import argparse

    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--model", default="", help=model_help)
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"))
    return parser


def show_dock(win, name: str, height: int):
    """Show and raise dock ``name`` at ``height`` pixels; return (its panel binding, the dock)."""
    from PySide6.QtCore import Qt

    dock = win.docks[name]
    dock.show()
    dock.raise_()
    win.resizeDocks([dock], [height], Qt.Orientation.Vertical)
    return next(b for b in win.bindings if b.object_name == name), dock
