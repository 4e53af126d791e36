"""The Help menu: About (versions and the device), the keyboard shortcuts, the documentation.

Versions are read from the installed packages' metadata (importlib.metadata), never by importing
them: About works before the first model has loaded torch.
"""

from __future__ import annotations

import platform
import sys
from html import escape
from importlib import metadata
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, qVersion
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QMessageBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = {"README": ROOT / "README.md", "architecture": ROOT / "docs" / "architecture.md"}
PACKAGES = (("TransformerLens", "transformer-lens"), ("PyTorch", "torch"),
            ("transformers", "transformers"), ("PySide6", "PySide6-Essentials"),
            ("pyqtgraph", "pyqtgraph"), ("NumPy", "numpy"))
# Gestures and keys that are not menu actions.
GESTURES = (
    ("Ctrl+Enter", "Run the prompt (in the prompt box)"),
    ("Esc", "Cancel the running job"),
    ("Ctrl+Z", "Undo the last change to the patch plan (in the patching panel)"),
    ("Ctrl+Shift+Z", "Redo a change to the patch plan"),
    ("Delete", "Remove the selected patch-plan item"),
    ("Ctrl+click", "Add or remove a sender head for path patching (head-sweep heatmap)"),
    ("Ctrl+click", "Use a top prediction as the counterfactual (attribution panel)"),
    ("Double-click", "Reset a heatmap's zoom; show a scanned head on repeated tokens"),
    ("Mouse wheel", "Zoom a heatmap"),
)


def package_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def lensbench_version() -> str:
    from app.version import __version__, frozen

    return __version__ + (" (app bundle)" if frozen() else "")


def device_text(controller) -> str:
    info = controller.model_info
    text = (f"{escape(info.name)} on {escape(info.device)} ({escape(info.dtype)})"
            if info is not None else "no model loaded")
    torch = sys.modules.get("torch")  # imported with the first model, not by About
    if torch is not None and torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        text += f"; CUDA: {escape(names)}"
    return text


def about_text(controller) -> str:
    rows = [("Lensbench", lensbench_version())]
    rows += [(name, package_version(dist)) for name, dist in PACKAGES]
    rows += [("Qt", qVersion()), ("Python", platform.python_version())]
    table = "".join(f"<tr><td>{escape(a)}</td><td>&nbsp;{escape(b)}</td></tr>" for a, b in rows)
    return ("<p><b>Lensbench</b>: a workbench for mechanistic interpretability of transformer "
            "language models.</p>"
            f"<table>{table}</table>"
            f"<p>Model and device: {device_text(controller)}</p>")


def show_about(window) -> QMessageBox:
    box = getattr(window, "about_box", None) or QMessageBox(window)
    box.setObjectName("aboutBox")
    box.setWindowTitle("About Lensbench")
    box.setTextFormat(Qt.TextFormat.RichText)
    box.setText(about_text(window.controller))
    box.setStandardButtons(QMessageBox.StandardButton.Close)
    box.setWindowModality(Qt.WindowModality.NonModal)
    window.about_box = box
    box.show()
    box.raise_()
    return box


def shortcut_rows(window) -> list[tuple[str, str]]:
    """(keys, what) for every action with a shortcut in the window, then the gestures."""
    rows, seen = [], set()
    actions = list(window.actions())
    for menu_action in window.menuBar().actions():
        if menu_action.menu() is not None:
            actions += menu_action.menu().actions()
    for binding in getattr(window, "bindings", []):
        actions += binding.widget.actions()
    for action in actions:
        keys = ", ".join(s.toString(QKeySequence.SequenceFormat.NativeText)
                         for s in action.shortcuts())
        text = action.text().replace("&", "").rstrip("…").strip()
        if keys and (keys, text) not in seen:
            seen.add((keys, text))
            rows.append((keys, text))
    rows += [r for r in GESTURES if r not in seen]
    return rows


def show_shortcuts(window) -> QDialog:
    dialog = QDialog(window)
    dialog.setObjectName("shortcutsDialog")
    dialog.setWindowTitle("Keyboard shortcuts")
    rows = shortcut_rows(window)
    table = QTableWidget(len(rows), 2)
    table.setObjectName("shortcutsTable")
    table.setHorizontalHeaderLabels(["Keys", "What it does"])
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    for r, (keys, what) in enumerate(rows):
        table.setItem(r, 0, QTableWidgetItem(keys))
        table.setItem(r, 1, QTableWidgetItem(what))
    table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
    buttons.rejected.connect(dialog.close)
    lay = QVBoxLayout(dialog)
    lay.addWidget(QLabel("Shortcuts and mouse gestures:"))
    lay.addWidget(table)
    lay.addWidget(buttons)
    dialog.resize(560, 420)
    dialog.table = table
    window.shortcuts_dialog = dialog
    dialog.show()
    return dialog


def open_doc(key: str) -> bool:
    path = DOCS[key]
    return path.is_file() and QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))


def build(window) -> None:
    """Add shortcuts, documentation and About to ``window``'s Help menu (made if missing)."""
    from app.lesson_dock import help_menu

    menu = help_menu(window)
    if not menu.isEmpty():
        menu.addSeparator()
    window.action_about = QAction("&About Lensbench", window)
    window.action_about.triggered.connect(lambda: show_about(window))
    window.action_shortcuts = QAction("&Keyboard shortcuts", window,
                                      shortcut=QKeySequence.StandardKey.HelpContents)
    window.action_shortcuts.triggered.connect(lambda: show_shortcuts(window))
    window.action_readme = QAction("&Read me (README)", window)
    window.action_readme.triggered.connect(lambda: open_doc("README"))
    window.action_design = QAction("&Architecture notes", window)
    window.action_design.triggered.connect(lambda: open_doc("architecture"))
    for action, key in ((window.action_readme, "README"), (window.action_design, "architecture")):
        action.setEnabled(DOCS[key].is_file())
        action.setToolTip(str(DOCS[key]))
    for action in (window.action_shortcuts, window.action_readme, window.action_design):
        menu.addAction(action)
    menu.addSeparator()
    menu.addAction(window.action_about)
