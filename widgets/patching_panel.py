"""The activation-patching editor: prompt pairs, side-by-side tokens, sweeps streamed into a heatmap.

A pure view: it reads what the user typed, shows results it is given (duck-typed numpy results),
and emits intents. Laid out for a 1366x768 laptop: two tool bars (widgets/patching_bars.py), the
prompt-pair editor as a collapsible strip, the heatmap with most of the height, and the patch
plan (widgets/patch_plan_view.py) as a collapsible side area next to it, so heatmap cells can be
dragged onto it.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QApplication,
    QLabel,
    QProgressBar,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from widgets.axes import fmt
from widgets.component_palette import ComponentPalette, component_mime
from widgets.heatmap import HeatmapView
from widgets.patch_pairs_view import PairsEditor
from widgets.patch_plan_view import PlanView
from widgets.patching_bars import PATH_TIP, SWEEPS, ResultBar, SweepBar
from widgets.patching_text import (
    IDLE,
    METRIC_TEXT,
    ROW_SHORT,
    SHORT,
    SWEEP_COMPONENT,
    baseline,
    cell_grid,
    computed_text,
    raw_baseline_text,
)
from widgets.token_strip import visible


class PatchingPanel(QWidget):
    """Clean/corrupted pairs, metric, sweep controls, progress and the sweep heatmap."""

    sig_pairs_edited = Signal()
    sig_run_sweep = Signal(str)  # sweep kind
    sig_cancel = Signal()
    sig_cell_clicked = Signal(object)  # {"layer": l, "head": h, "pos": p, "component": c}
    sig_estimate = Signal(str)  # sweep kind: attribution patching (one forward + backward)
    sig_verify = Signal(str, object)  # sweep kind, flat cell indices to patch exactly
    sig_path_patch = Signal(object, str)  # sender heads [(layer, head)], receiver input q/k/v
    sig_export = Signal(str, str)  # "heatmap" or "plan", "png" / "svg" / "csv"

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.pairs_editor = PairsEditor()
        self.pairs_editor.sig_edited.connect(self.sig_pairs_edited)
        self.pairs_editor.pairs_table.currentCellChanged.connect(
            lambda *_: self.pairs_editor.show_alignment(self._check))
        self.pairs_table = self.pairs_editor.pairs_table
        self.alignment = self.pairs_editor.alignment
        self.message = QLabel("")
        self.message.setObjectName("patchingMessage")
        self.message.setStyleSheet("color: #b00020;")
        self.message.setWordWrap(True)
        self.message.hide()
        self.sweep_bar = SweepBar()
        self.result_bar = ResultBar()
        # The controls, by their old names (the binding, tests and tools use them).
        bar, res = self.sweep_bar, self.result_bar
        self.metric_combo, self.direction_combo = bar.metric_combo, bar.direction_combo
        self.sweep_combo, self.run_button, self.cancel_button = \
            bar.sweep_combo, bar.run_button, bar.cancel_button
        self.view_combo, self.estimate_button, self.top_k = \
            res.view_combo, res.estimate_button, res.top_k
        self.verify_button, self.path_button, self.path_input = \
            res.verify_button, res.path_button, res.path_input
        self.run_button.clicked.connect(lambda: self.sig_run_sweep.emit(self.sweep_kind()))
        self.cancel_button.clicked.connect(self.sig_cancel.emit)
        self.estimate_button.clicked.connect(lambda: self.sig_estimate.emit(self.sweep_kind()))
        self.verify_button.clicked.connect(self._verify)
        self.view_combo.currentIndexChanged.connect(lambda _i: self._redraw())
        res.sig_export.connect(self.sig_export)
        self.path_button.clicked.connect(lambda: self.sig_path_patch.emit(
            list(self.senders), self.path_input.currentData()))
        self.senders: list[tuple[int, int]] = [(0, 0)]
        self.path = None
        self.path_result = None  # the engine's path-patching result behind ``path``
        self.estimate = None
        self.exact = None
        self.progress = QProgressBar()
        self.progress.setObjectName("patchingProgress")
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(True)
        self.progress.setFormat("idle")
        self.progress.setMaximumHeight(self.fontMetrics().height() + 6)
        # Shown while a job runs (and after a cancel, to say what was kept); otherwise the
        # heatmap takes its room (the status bar shows every job's progress too).
        self.progress.hide()
        self.heatmap = HeatmapView(x_label="", y_label="", colorbar_label="metric",
                                   aspect_locked=False)
        self.heatmap.setObjectName("patchingHeatmap")
        self.heatmap.sig_cell_clicked.connect(self._cell_clicked)
        self.heatmap.set_tooltip_fn(self._tooltip)
        self.heatmap.set_readout_hint("Hover a cell for its value; click a head to select it "
                                      "(and make it the path-patching sender); drag a cell "
                                      "onto the plan.")
        self.summary = QLabel(IDLE)
        self.summary.setObjectName("patchingSummary")
        self.summary.setWordWrap(True)
        self.warning = QLabel()
        self.warning.setObjectName("patchingWarning")
        self.warning.setStyleSheet("color: #8a5a00;")
        self.warning.setWordWrap(True)
        self.warning.hide()
        self.result = None
        self._rows: list[tuple] = []
        self._check = None

        main = QWidget()
        main_lay = QVBoxLayout(main)
        main_lay.setContentsMargins(0, 0, 0, 0)
        main_lay.setSpacing(2)
        main_lay.addWidget(self.result_bar)
        main_lay.addWidget(self.progress)
        main_lay.addWidget(self.heatmap, 1)
        main_lay.addWidget(self.summary)
        main_lay.addWidget(self.warning)
        self.palette = ComponentPalette()
        self.plan = PlanView()
        # One narrow column: the palette, the plan list and its bars, top to bottom.
        self.plan_box = QSplitter(Qt.Orientation.Vertical)
        self.plan_box.setObjectName("patchPlanArea")
        self.plan_box.addWidget(self.palette)
        self.plan_box.addWidget(self.plan)
        self.plan_box.addWidget(self.plan.chart)  # the plan's bars under palette + plan list
        self.plan_box.setStretchFactor(0, 3)
        self.plan_box.setStretchFactor(1, 3)
        self.plan_box.setStretchFactor(2, 4)
        self.splitter = QSplitter()
        self.splitter.addWidget(main)
        self.splitter.addWidget(self.plan_box)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setCollapsible(0, False)
        self.heatmap.enable_cell_drag(self._cell_mime)  # a drag on a cell adds it to the plan
        self._sized = False
        bar.pairs_toggle.toggled.connect(self._show_pairs)
        bar.plan_toggle.toggled.connect(self.plan_box.setVisible)
        # Undo/redo of the plan while focus is anywhere in this panel (Ctrl+Z, Ctrl+Shift+Z).
        self.addActions(self.plan.edit_actions())
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(3)
        lay.addWidget(self.sweep_bar)
        lay.addWidget(self.pairs_editor)
        lay.addWidget(self.message)
        lay.addWidget(self.splitter, 1)

    def _show_pairs(self, shown: bool) -> None:
        self.pairs_editor.setVisible(shown)
        self.sweep_bar.pairs_toggle.setText(("▾ " if shown else "▸ ") + "Pairs")

    def showEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        super().showEvent(event)
        if not self._sized and self.width() > 200:  # the heatmap gets the larger part
            self._sized = True
            self.splitter.setSizes([int(self.width() * 0.6), int(self.width() * 0.4)])

    # -- pairs (the editor lives in widgets/patch_pairs_view.py) ---------------------------------
    def add_pair(self, clean: str, corrupted: str, answer: str, counterfactual: str) -> None:
        self.pairs_editor.add_pair(clean, corrupted, answer, counterfactual)

    def set_pair(self, row: int, clean: str, corrupted: str, answer: str = "",
                 counterfactual: str = "") -> None:
        self.pairs_editor.set_pair(row, clean, corrupted, answer, counterfactual)

    def pairs(self) -> list[tuple[str, str, str, str]]:
        return self.pairs_editor.pairs()

    def metric_name(self) -> str:
        return self.metric_combo.currentData()

    def direction(self) -> str:
        return self.direction_combo.currentData()

    def sweep_kind(self) -> str:
        return self.sweep_combo.currentData()

    # -- alignment -------------------------------------------------------------------------------
    def set_alignment(self, check) -> None:
        """``check``: PairCheck-like (clean_tokens, corrupted_tokens, differing, message)."""
        self._check = check
        self.pairs_editor.show_alignment(check)
        self.pairs_editor.show_notes(getattr(check, "notes", ()))
        self.show_message(check.message)
        self.run_button.setEnabled(not check.message)

    def show_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def clear_results(self, text: str = IDLE) -> None:
        """Forget every result (another model was loaded: they no longer apply)."""
        self.result = self.exact = self.estimate = self.path = self.path_result = None
        self._rows = []
        self.heatmap.clear()
        self.summary.setText(text)
        self.warning.hide()
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.progress.hide()
        self.verify_button.setEnabled(False)
        self.view_combo.blockSignals(True)
        self.view_combo.setCurrentIndex(0)
        self.view_combo.blockSignals(False)
        self.plan.clear_result()

    # -- running ---------------------------------------------------------------------------------
    def set_available(self, kinds: dict, caps=None) -> None:
        """Offer only the sweeps this model can run: ``kinds`` maps a sweep kind to why it
        cannot ("" = it can); an unavailable entry is greyed with the reason as its tooltip.
        ``caps`` (the model's capabilities) also says which receiver inputs path patching has."""
        box = self.sweep_combo
        model = box.model()
        for i in range(box.count()):
            reason = kinds.get(box.itemData(i), "")
            item = model.item(i)
            item.setEnabled(not reason)
            full = dict(SWEEPS).get(box.itemData(i), box.itemText(i))
            box.setItemData(i, f"Not available on this model: {reason}" if reason else full,
                            Qt.ItemDataRole.ToolTipRole)
        if not model.item(box.currentIndex()).isEnabled():
            box.setCurrentIndex(next(i for i in range(box.count()) if model.item(i).isEnabled()))
        if caps is None:
            return
        group = caps.n_heads // max(1, caps.n_kv_heads) if caps.n_kv_heads else 1
        inputs = self.path_input
        for i in range(inputs.count()):
            comp = inputs.itemData(i)
            reason = caps.missing.get(comp, "")
            inputs.model().item(i).setEnabled(not reason)
            kv = comp in ("k", "v") and group > 1
            inputs.setItemText(i, f"→ {comp}" + (" (KV)" if kv else ""))
            inputs.setItemData(i, (f"Not available on this model: {reason}" if reason else
                                   f"into the receivers' {comp}" + (
                                       f": one receiver per key/value head, shared by {group} "
                                       "query heads" if kv else "")), Qt.ItemDataRole.ToolTipRole)
        self._path_blocked = caps.head_dla
        self.path_button.setEnabled(not caps.head_dla)
        self.set_senders(self.senders)

    def set_busy(self, busy: bool) -> None:
        self.cancel_button.setEnabled(busy)
        self.run_button.setEnabled(not busy and not (self._check and self._check.message))
        if not busy and self.progress.format().startswith("Patched"):
            self.progress.setFormat("done")
        self.progress.setVisible(busy)

    def set_progress(self, fraction: float, message: str) -> None:
        self.progress.setValue(int(fraction * 1000))
        self.progress.setFormat(f"{message}  %p%" if message else "%p%")

    def set_cancelled(self) -> None:
        self.set_busy(False)
        done = "" if self.result is None else f" ({self.result.done}/{self.result.total} " \
                                              "cells kept)"
        self.progress.setFormat("cancelled" + done)
        self.progress.show()

    def set_sweep_result(self, result) -> None:
        """A partial (NaN = not yet computed) or complete exact sweep result."""
        self.exact = result
        if self.view_combo.currentData() != "exact":
            self.view_combo.setCurrentIndex(0)  # redraws
        else:
            self._draw(result)

    def set_estimate(self, result) -> None:
        """An attribution-patching estimate (same layout as a sweep)."""
        self.estimate = result
        self.verify_button.setEnabled(True)
        if self.view_combo.currentData() != "estimate":
            self.view_combo.setCurrentIndex(1)
        else:
            self._draw(result)

    def _redraw(self) -> None:
        shown = {"exact": self.exact, "estimate": self.estimate,
                 "path": self.path}[self.view_combo.currentData()]
        if shown is not None:
            self._draw(shown)

    def set_path_result(self, result) -> None:
        """Path patching: receivers [layer, head] (NaN before the sender) + direct to logits."""
        self.path_result = result
        tokens = self.exact.clean_tokens if self.exact is not None else ()
        corr = self.exact.corrupted_tokens if self.exact is not None else ()
        self.path = SimpleNamespace(
            kind="path", metric=result.metric,
            axes=("layer", getattr(result, "receiver_axis", "head")),
            values=np.asarray(result.receivers, dtype=np.float32),
            done=int(np.isfinite(result.receivers).sum()),
            total=int(np.isfinite(result.receivers).sum()), clean_value=result.clean_value,
            corrupted_value=result.corrupted_value, clean_tokens=tokens, corrupted_tokens=corr,
            seconds=result.seconds, chunk_size=0, complete=True, direction="denoise",
            labels={"path": f"{result.label} → {result.component}",
                    "how": getattr(result, "path", ""),
                    "direct": float(result.direct_to_logits),
                    "raw_baselines": tuple(getattr(result, "raw_baselines", ()) or ()) or None})
        if self.view_combo.currentData() != "path":
            self.view_combo.setCurrentIndex(2)
        else:
            self._draw(self.path)

    def correlation(self) -> float | None:
        """Pearson r between the estimate and the exact values on the cells both have."""
        e, x = self.estimate, self.exact
        if e is None or x is None or e.kind != x.kind or e.metric != x.metric:
            return None
        a, b = np.ravel(e.values).astype(float), np.ravel(x.values).astype(float)
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() < 2 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
            return None
        return float(np.corrcoef(a[ok], b[ok])[0, 1])

    def _verify(self) -> None:
        if self.estimate is None:
            return
        flat = np.nan_to_num(np.abs(np.ravel(self.estimate.values)), nan=-1.0)
        cells = [int(i) for i in np.argsort(-flat)[: self.top_k.value()]]
        self.sig_verify.emit(self.estimate.kind, cells)

    def _draw(self, result) -> None:
        self.result = result
        axes, values = tuple(result.axes), np.asarray(result.values, dtype=np.float32)
        rows, col_axis = cell_grid(axes, values.shape)
        self._rows = rows
        col = axes.index(col_axis)
        matrix = np.moveaxis(values, col, -1).reshape(len(rows), values.shape[col])
        finite = matrix[np.isfinite(matrix)]
        # Diverging around the value a cell has when its patch changes nothing (the base run's
        # metric, or 0 for an estimate of the change): white = no effect, blue = above it.
        centre, what = baseline(result)
        gap = abs(result.clean_value - result.corrupted_value)
        span = max(float(np.abs(finite - centre).max()) if finite.size else 0.0, gap, 1e-6)
        levels = (centre - span, centre + span)
        self.heatmap.set_colormap("diverging")
        row_labels = [self._row_label(axes, col_axis, r) for r in rows]
        if col_axis == "pos":
            col_labels = [f"{i}:{t}" for i, t in enumerate(result.clean_tokens)]
        elif col_axis == "kv_head":
            col_labels = [f"KV{h}" for h in range(matrix.shape[1])]
        else:
            col_labels = [f"H{h}" for h in range(matrix.shape[1])]
        # Axis titles first: the row-label axis sizes itself for its title and its tick labels.
        self.heatmap.plot.setLabel("bottom", {"pos": "position (clean token)",
                                              "kv_head": "key/value head (shared by a group of "
                                                         "query heads)"}.get(col_axis, "head"))
        self.heatmap.plot.setLabel("left", "layer" if len(axes) == 2 else " × ".join(
            a for a in axes if a != col_axis))
        first = self.heatmap.image.image is None or self.heatmap._shape != matrix.shape
        self.heatmap.set_matrix(matrix, levels, row_labels=row_labels, col_labels=col_labels,
                                reset_view=first)
        metric_label = METRIC_TEXT.get(result.metric, result.metric)
        change = "change in " if (result.labels or {}).get("estimate") else ""
        self.heatmap.set_colorbar_label(f"{change}{SHORT.get(result.metric, result.metric)} "
                                        f"(white = {what})")
        raw, warning = raw_baseline_text(result)
        self.warning.setText(warning)
        self.warning.setVisible(bool(warning))
        state = "done" if result.complete else f"{result.done}/{result.total} cells so far"
        how = (f"attribution estimate (linear), {result.seconds:.2f} s"
               if (result.labels or {}).get("estimate") else
               f"exact, {result.seconds:.2f} s, {result.chunk_size} patched runs per forward")
        r = self.correlation()
        corr = "" if r is None else f" Estimate vs exact: r = {r:.3f}."
        if result.kind == "path":
            sl_sh = result.labels["path"]
            self.summary.setToolTip(result.labels.get("how", ""))
            self.summary.setText(
                f"Path patching {sl_sh} of later heads (grey: not after a sender), "
                f"{result.seconds:.2f} s. Senders → logits directly: "
                f"{fmt(result.labels['direct'])}. {metric_label}: clean "
                f"{fmt(result.clean_value)}, corrupted {fmt(result.corrupted_value)}{raw}.")
            return
        computed = computed_text(result)
        self.summary.setText(
            f"{dict(SWEEPS).get(result.kind, result.kind)} — {state}; {how}. {metric_label}: "
            f"clean {fmt(result.clean_value)}, corrupted {fmt(result.corrupted_value)}{raw}; "
            f"white = {what}.{corr} {computed}".rstrip())
        self.summary.setToolTip(getattr(result, "path", "") or "")

    def _row_label(self, axes, col_axis, row: tuple) -> str:
        names = [a for a in axes if a != col_axis]
        parts = []
        comps = (self.result.labels or {}).get("components", ())
        for name, i in zip(names, row, strict=True):
            if name == "component":
                comp = str(comps[i]) if i < len(comps) else str(i)
                parts.append(ROW_SHORT.get(comp, comp))
            elif name == "layer":
                parts.append(f"L{i}")
            elif name == "head":
                parts.append(f"H{i}")
            elif name == "kv_head":
                parts.append(f"KV{i}")
            else:
                parts.append(f"{name}{i}")
        return " ".join(parts)

    def cell_index(self, row: int, col: int) -> dict:
        """The component a heatmap cell stands for, as {axis: index}."""
        if self.result is None or not (0 <= row < len(self._rows)):
            return {}
        axes = tuple(self.result.axes)
        _, col_axis = cell_grid(axes, np.asarray(self.result.values).shape)
        names = [a for a in axes if a != col_axis]
        out = dict(zip(names, self._rows[row], strict=True))
        out[col_axis] = col
        if "component" in out:
            out["component"] = self.result.labels["components"][out["component"]]
        else:
            out["component"] = self.result.kind
        return out

    def cell_value(self, row: int, col: int) -> float:
        idx = self.cell_index(row, col)
        axes = tuple(self.result.axes)
        key = []
        for a in axes:
            v = idx[a]
            key.append(self.result.labels["components"].index(v) if a == "component" else v)
        return float(np.asarray(self.result.values)[tuple(key)])

    def _tooltip(self, x: float, y: float) -> str | None:
        row, col = int(y), int(x)
        idx = self.cell_index(row, col)
        if not idx:
            return None
        value = self.cell_value(row, col)
        where = ", ".join(f"{k.replace('kv_head', 'KV head')} {v}" for k, v in idx.items()
                          if k != "component")
        padding = self._is_padding(idx)
        text = f"{idx['component']} {where}: " + (
            "no such key/value head (this model has fewer of them than query heads)" if padding
            else "not computed yet" if np.isnan(value) else f"{value:.4f}")
        if "kv_head" in idx and not padding:
            groups = (self.result.labels or {}).get("kv_groups") or ()
            if idx["kv_head"] < len(groups):
                heads = groups[idx["kv_head"]]
                text += f"  (shared by query heads H{heads[0]}–H{heads[-1]})"
        if "pos" in idx and self.result is not None:
            p = idx["pos"]
            c = self.result.clean_tokens[p] if p < len(self.result.clean_tokens) else ""
            r = self.result.corrupted_tokens[p] if p < len(self.result.corrupted_tokens) else ""
            text += f"  (clean {visible(c)!s}, corrupted {visible(r)!s})"
        return text

    def _is_padding(self, idx: dict) -> bool:
        """A cell of a composite's k/v part past the model's key/value heads (NaN padding)."""
        shapes = (self.result.labels or {}).get("part_shapes") or {}
        axes = ((self.result.labels or {}).get("part_axes") or {}).get(idx.get("component"))
        shape = shapes.get(idx.get("component"))
        if not shape or not axes:
            return False
        return any(idx.get("head" if a == "kv_head" else a, 0) >= n
                   for a, n in zip(axes, shape, strict=False) if a in ("head", "kv_head"))

    def cell_plan_item(self, row: int, col: int) -> dict | None:
        """The plan item a heatmap cell stands for (what dragging the cell drops)."""
        idx = self.cell_index(row, col)
        if not idx or self._is_padding(idx):
            return None
        comp = SWEEP_COMPONENT.get(idx["component"], idx["component"])
        return {"component": comp, "layer": int(idx.get("layer", 0)),
                "index": int(idx.get("head", idx.get("kv_head", -1))),
                "positions": [int(idx["pos"])] if "pos" in idx else []}

    def _cell_mime(self, row: int, col: int):
        item = self.cell_plan_item(row, col)
        return component_mime([item]) if item is not None else None

    def _toggled_senders(self, head: tuple[int, int]) -> list[tuple[int, int]]:
        """A plain click picks one sender; Ctrl+click adds the head, or removes it."""
        if not QApplication.keyboardModifiers() & Qt.KeyboardModifier.ControlModifier:
            return [head]
        if head in self.senders:
            return [s for s in self.senders if s != head] or [head]
        return sorted([*self.senders, head])

    def set_senders(self, senders: list[tuple[int, int]]) -> None:
        self.senders = list(senders)
        names = " + ".join(f"L{sl}H{sh}" for sl, sh in self.senders)
        self.path_button.setText(f"Path patch {names}" if 0 < len(self.senders) < 4
                                 else f"Path patch {len(self.senders)} senders")
        blocked = getattr(self, "_path_blocked", "")
        self.path_button.setToolTip(f"Not available on this model: {blocked}" if blocked
                                    else f"Senders: {names}. {PATH_TIP}")

    def _cell_clicked(self, row: int, col: int) -> None:
        idx = self.cell_index(row, col)
        if idx:
            self.heatmap.set_overlay("selected", (col, row, 1, 1), "#000000", width=2)
            if "head" in idx and "layer" in idx:
                self.set_senders(self._toggled_senders((int(idx["layer"]), int(idx["head"]))))
            self.sig_cell_clicked.emit(idx)
