"""The patch plan: a list that accepts dropped components, per-item modes, undo/redo, results.

Every edit (drop, remove, reorder, mode change) is one ``QUndoStack`` command holding the plan
before and after, so undo/redo restore exactly what was there. Results are bars: all items
together, then each alone, against the clean and corrupted baselines (dashed lines).
"""

from __future__ import annotations

import copy

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QBrush, QColor, QKeySequence, QUndoCommand, QUndoStack
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from widgets.axes import fmt
from widgets.bar_chart import BarChart
from widgets.component_palette import MIME_TYPE, parse_mime

MODES = [("denoise", "denoise: clean → corrupted"), ("noise", "noise: corrupted → clean"),
         ("zero", "zero-ablate"), ("mean", "mean-ablate (reference batch)"),
         ("resample", "resample-ablate (next pair)")]
HEADED = ("z", "q", "k", "v", "pattern")


def _tool(text: str, tip: str) -> QToolButton:
    b = QToolButton()
    b.setText(text)
    b.setToolTip(tip)
    return b


def item_label(d: dict) -> str:
    c, layer, index = d["component"], d.get("layer", 0), d.get("index", -1)
    if c == "feature":
        name = f"F{index} ({str(d.get('sae', '')).rstrip('/').split('/')[-1]}, L{layer})"
    elif c == "embed":
        name = "embed"
    elif c in HEADED:
        name = f"L{layer}H{index} {c}"
    elif c == "neuron":
        name = f"L{layer} neuron {index}"
    else:
        name = f"L{layer} {c}"
    pos = d.get("positions") or []
    where = " @ all positions" if not pos else " @ pos " + ",".join(str(p) for p in pos)
    return f"{name}{where}  [{d.get('mode', 'denoise')}]"


class _SetPlan(QUndoCommand):
    def __init__(self, view: PlanView, before: list[dict], after: list[dict], text: str) -> None:
        super().__init__(text)
        self.view, self.before, self.after = view, before, after

    def redo(self) -> None:
        self.view._apply(self.after)

    def undo(self) -> None:
        self.view._apply(self.before)


class PlanList(QListWidget):
    """Accepts drops of ``MIME_TYPE``; the drop row is where the items go."""

    sig_dropped = Signal(object, int)  # list of item dicts, row to insert at

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DropOnly)
        self.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.setToolTip("The patch plan: drag components from the palette or cells from the "
                        "sweep heatmap here.")

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        if event.mimeData().hasFormat(MIME_TYPE):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        if event.mimeData().hasFormat(MIME_TYPE):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        items = parse_mime(event.mimeData())
        if not items:
            event.ignore()
            return
        target = self.itemAt(event.position().toPoint())
        row = self.row(target) if target is not None else self.count()
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        self.sig_dropped.emit(items, row)


class PlanView(QWidget):
    sig_run_plan = Signal(object)  # list of item dicts

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.items: list[dict] = []
        self.undo_stack = QUndoStack(self)
        self.list = PlanList()
        self.list.sig_dropped.connect(self.add_items)
        self.list.currentRowChanged.connect(self._row_changed)
        self.mode = QComboBox()
        for key, label in MODES:
            self.mode.addItem(label, key)
        self.mode.setToolTip("What the selected item does: patch between the runs, or ablate")
        self.mode.activated.connect(lambda _i: self.set_mode(self.list.currentRow(),
                                                             self.mode.currentData()))
        self.remove_button = _tool("Remove", "Remove the selected item (Delete)")
        self.up_button = _tool("↑", "Move the selected item up")
        self.down_button = _tool("↓", "Move the selected item down")
        self.undo_button = _tool("Undo", "Undo the last change to the plan (Ctrl+Z)")
        self.redo_button = _tool("Redo", "Redo (Ctrl+Shift+Z)")
        self.run_button = _tool("Run plan", "The metric with all items applied together and "
                                "each alone, in one batched run")
        self.run_button.setObjectName("planRunButton")
        # Keyboard: undo/redo of the plan (added to the patching panel, so they work wherever
        # the focus is in it) and Delete in the list.
        self.undo_action = self.undo_stack.createUndoAction(self, "Undo plan change")
        self.undo_action.setShortcut(QKeySequence.StandardKey.Undo)
        self.redo_action = self.undo_stack.createRedoAction(self, "Redo plan change")
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        for action in (self.undo_action, self.redo_action):
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        delete = QAction("Remove plan item", self.list, shortcut=QKeySequence.StandardKey.Delete)
        delete.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        delete.triggered.connect(lambda: self.remove(self.list.currentRow()))
        self.list.addAction(delete)
        self.remove_button.clicked.connect(lambda: self.remove(self.list.currentRow()))
        self.up_button.clicked.connect(lambda: self.move(self.list.currentRow(), -1))
        self.down_button.clicked.connect(lambda: self.move(self.list.currentRow(), 1))
        self.undo_button.clicked.connect(self.undo_stack.undo)
        self.redo_button.clicked.connect(self.undo_stack.redo)
        self.undo_stack.canUndoChanged.connect(self.undo_button.setEnabled)
        self.undo_stack.canRedoChanged.connect(self.redo_button.setEnabled)
        self.undo_button.setEnabled(False)
        self.redo_button.setEnabled(False)
        self.run_button.clicked.connect(lambda: self.sig_run_plan.emit(copy.deepcopy(self.items)))
        self.message = QLabel("")
        self.message.setStyleSheet("color: #b00020;")
        self.message.setWordWrap(True)
        self.message.hide()
        self.note = QLabel("")
        self.note.setObjectName("planNote")
        self.note.setStyleSheet("color: #555;")
        self.note.setWordWrap(True)
        self.note.hide()
        self.chart = BarChart("h")
        self.chart.set_axis_titles("", "metric")
        self.baselines: list[pg.InfiniteLine] = []
        self.result = None
        buttons = QHBoxLayout()
        buttons.setSpacing(2)
        for w in (self.remove_button, self.up_button, self.down_button, self.undo_button,
                  self.redo_button):
            buttons.addWidget(w)
        buttons.addStretch(1)
        buttons.addWidget(self.run_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(QLabel("Patch plan (drop components here)"))
        lay.addWidget(self.list, 1)
        lay.addWidget(self.mode)
        lay.addLayout(buttons)
        lay.addWidget(self.message)
        lay.addWidget(self.note)
        lay.addWidget(self.chart, 2)

    def edit_actions(self) -> list[QAction]:
        """Undo and redo of the plan, for the panel that holds it (Ctrl+Z, Ctrl+Shift+Z)."""
        return [self.undo_action, self.redo_action]

    # -- editing (each edit is one undoable command) --------------------------------------------
    def _push(self, after: list[dict], text: str) -> None:
        self.undo_stack.push(_SetPlan(self, copy.deepcopy(self.items), after, text))

    def add_items(self, new: list[dict], row: int = -1) -> None:
        row = len(self.items) if row < 0 or row > len(self.items) else row
        after = copy.deepcopy(self.items)
        for i, d in enumerate(new):
            d = dict(d)
            d.setdefault("mode", "denoise")
            after.insert(row + i, d)
        self._push(after, f"add {len(new)} item(s)")

    def remove(self, row: int) -> None:
        if 0 <= row < len(self.items):
            after = copy.deepcopy(self.items)
            del after[row]
            self._push(after, "remove item")

    def move(self, row: int, step: int) -> None:
        to = row + step
        if 0 <= row < len(self.items) and 0 <= to < len(self.items):
            after = copy.deepcopy(self.items)
            after[row], after[to] = after[to], after[row]
            self._push(after, "reorder")
            self.list.setCurrentRow(to)

    def set_mode(self, row: int, mode: str) -> None:
        if 0 <= row < len(self.items) and self.items[row].get("mode") != mode:
            after = copy.deepcopy(self.items)
            after[row]["mode"] = mode
            self._push(after, f"mode {mode}")
            self.list.setCurrentRow(row)

    def set_items(self, items: list[dict]) -> None:
        """Replace the plan (a session restore): not undoable."""
        self.undo_stack.clear()
        self._apply(copy.deepcopy(items))

    def _apply(self, items: list[dict]) -> None:
        row = self.list.currentRow()
        self.items = copy.deepcopy(items)
        self.list.clear()
        for d in self.items:
            QListWidgetItem(item_label(d), self.list)
        if self.items:
            self.list.setCurrentRow(min(max(row, 0), len(self.items) - 1))

    def _row_changed(self, row: int) -> None:
        if 0 <= row < len(self.items):
            self.mode.setCurrentIndex(self.mode.findData(self.items[row].get("mode", "denoise")))

    def mark_invalid(self, rows: list[int], message: str) -> None:
        for i in range(self.list.count()):
            item = self.list.item(i)
            item.setBackground(QBrush(QColor(255, 205, 205)) if i in rows else QBrush())
        self.show_message(message)

    def show_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    # -- results ---------------------------------------------------------------------------------
    def clear_result(self) -> None:
        """Drop the bars (e.g. they were measured on another model)."""
        self.result = None
        for line in self.baselines:
            self.chart.plot.removeItem(line)
        self.baselines = []
        self.chart.clear()
        self.chart.set_title("")
        self.note.hide()

    def set_result(self, result) -> None:
        self.result = result
        base = result.corrupted_value if result.base == "corrupted" else result.clean_value
        self.chart.set_data(list(result.labels), result.values, origin=base)
        raw = getattr(result, "raw_baselines", None)
        raw_text = ""
        if result.metric == "logit_diff_norm" and raw is not None and np.all(np.isfinite(raw)):
            raw_text = (f" Normalised by the raw logit differences: clean {fmt(raw[0])}, "
                        f"corrupted {fmt(raw[1])}.")
        # A short title: a pyqtgraph title is as wide as its text, and would widen the column.
        self.chart.set_title(f"bars from the {result.base} run")
        self.note.setText(f"Bars start at the {result.base} run's "
                          f"{fmt(base)}; clean {fmt(result.clean_value)}, corrupted "
                          f"{fmt(result.corrupted_value)}.{raw_text}")
        self.note.show()
        self.chart.set_axis_titles("", result.metric)
        for line in self.baselines:
            self.chart.plot.removeItem(line)
        self.baselines = []
        for value, color, name in ((result.clean_value, "#2a8a2a", "clean"),
                                   (result.corrupted_value, "#b03030", "corrupted")):
            line = pg.InfiniteLine(value, angle=90, label=name,
                                   pen=pg.mkPen(color, width=2, style=Qt.PenStyle.DashLine),
                                   labelOpts={"color": color, "position": 0.95})
            self.chart.plot.addItem(line, ignoreBounds=True)
            self.baselines.append(line)
        values = [*[float(v) for v in result.values], result.clean_value, result.corrupted_value]
        lo, hi = min(values + [0.0]), max(values + [0.0])
        pad = 0.08 * max(hi - lo, 1e-6)
        self.chart.plot.setXRange(lo - pad, hi + pad, padding=0)
        self.show_message("")
