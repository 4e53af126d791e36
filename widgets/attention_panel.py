"""The Attention panel: every head as one mosaic, one head in full, and a token strip.

Duck-typed input (see engine.attention.AttentionResult): ``items`` (each with ``label``,
``str_tokens``, ``patterns[L, H, q, k]``, ``scores`` or None), ``layers``, ``notes``,
``layers_with_pattern``, ``layers_with_scores``. Intents go out as signals; the binding does
the jobs and the file writing.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from widgets.component_palette import component_mime
from widgets.heatmap import COLORMAPS, HeatmapView, block_max, mosaic
from widgets.pinned_heads import PinnedHeads
from widgets.token_strip import TokenStrip, visible

GRID_TILE = 64  # max pixels per tile when every layer is shown
LAYER_TILE = 256  # max pixels per tile when one layer is shown larger
EXPORTS = (("focused_png", "Focused head as PNG…"), ("focused_svg", "Focused head as SVG…"),
           ("grid_png", "Grid as PNG…"), ("grid_svg", "Grid as SVG…"),
           ("focused_csv", "Focused head values as CSV…"), ("all_npz", "All patterns as NPZ…"))


def _fmax(a: np.ndarray) -> float:
    v = float(np.fmax.reduce(a, axis=None)) if a.size else math.nan
    return v


def _fmin(a: np.ndarray) -> float:
    return float(np.fmin.reduce(a, axis=None)) if a.size else math.nan


class AttentionPanel(QWidget):
    sig_head_clicked = Signal(int, int)  # layer, head
    sig_position_selected = Signal(int)  # query position
    sig_scores_needed = Signal()  # the user asked for scores the result does not hold
    sig_export_requested = Signal(str)  # one of EXPORTS' keys
    sig_keep_toggled = Signal(str, bool)  # prompt label, keep it in the batch
    sig_pins_changed = Signal(object)  # list of (layer, head): the user pinned or unpinned one

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("AttentionPanel")
        self._result = None
        self._item = 0
        self._layer = 0  # model layer of the focused head
        self._head = 0
        self._query = -1  # -1 = last position
        self._kept: set[str] = set()
        self._pool_cache: dict[tuple, tuple[np.ndarray, int]] = {}
        self._stats_cache: dict[tuple, tuple[float, float]] = {}
        self._grid_geom: dict = {}
        self._strip_values = np.zeros(0)
        self._idle_text = "Run a prompt to see every head's attention."
        self._wanted_layer_view: int | None = None  # a session's layer view, until it exists
        self._build()

    # -- construction ----------------------------------------------------------------------------
    def _build(self) -> None:
        self.item_combo = QComboBox()
        self.item_combo.setObjectName("attentionItem")
        self.item_combo.setToolTip("Which prompt of the batch to show")
        self.item_combo.setMinimumContentsLength(18)
        self.keep_button = QToolButton()
        self.keep_button.setText("Keep")
        self.keep_button.setCheckable(True)
        self.keep_button.setToolTip("Keep this prompt in the batch, so you can switch between it "
                                    "and later prompts without recomputing by hand")
        self.mode_combo = QComboBox()
        self.mode_combo.setObjectName("attentionMode")
        self.mode_combo.addItem("Pattern (softmax)", "pattern")
        self.mode_combo.addItem("Scores (pre-softmax)", "scores")
        self.mode_combo.setToolTip("Pattern: the attention weights, rows sum to 1. Scores: the "
                                   "logits before the softmax; masked (future) cells are grey.")
        self.cmap_combo = QComboBox()
        self.cmap_combo.setObjectName("attentionColormap")
        for name in COLORMAPS:
            self.cmap_combo.addItem(name)
        self.cmap_combo.setToolTip("Colour map")
        self.scale_combo = QComboBox()
        self.scale_combo.setObjectName("attentionScale")
        self.scale_combo.addItem("Shared scale", "shared")
        self.scale_combo.addItem("Per-head scale", "per-head")
        self.scale_combo.setToolTip("Shared: one colour scale for every head, so heads compare. "
                                    "Per-head: each head's own range, so weak heads show structure.")
        self.bos_check = QCheckBox("Hide BOS column")
        self.bos_check.setObjectName("attentionHideBos")
        self.bos_check.setToolTip("Blank the first key column (the start token). Many heads park "
                                  "attention there (an attention sink), which washes out the rest.")
        self.layer_combo = QComboBox()
        self.layer_combo.setObjectName("attentionLayerView")
        self.layer_combo.addItem("All layers", -1)
        self.layer_combo.setToolTip("Show every layer, or one layer's heads larger")
        self.export_button = QToolButton()
        self.export_button.setText("Export")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.export_button.setToolTip("Save pictures (PNG/SVG) or the values (CSV/NPZ)")
        menu = QMenu(self.export_button)
        self.export_actions = {}
        for key, text in EXPORTS:
            action = menu.addAction(text)
            action.triggered.connect(lambda _=False, k=key: self.sig_export_requested.emit(k))
            self.export_actions[key] = action
        self.export_button.setMenu(menu)
        self.export_button.setEnabled(False)

        row1 = QHBoxLayout()
        row1.addWidget(QLabel("Prompt"))
        row1.addWidget(self.item_combo, 1)
        row1.addWidget(self.keep_button)
        row1.addWidget(self.mode_combo)
        row1.addWidget(self.export_button)
        row2 = QHBoxLayout()
        row2.addWidget(self.layer_combo)
        row2.addWidget(self.scale_combo)
        row2.addWidget(self.cmap_combo)
        row2.addWidget(self.bos_check)
        self.pins = PinnedHeads()
        row2.addWidget(self.pins)
        row2.addStretch(1)

        self.message = QLabel()
        self.message.setObjectName("attentionMessage")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #b00020;")
        self.message.hide()
        self.notes = QLabel()
        self.notes.setObjectName("attentionNotes")
        self.notes.setWordWrap(True)
        self.notes.setStyleSheet("color: #8a5a00;")
        self.notes.hide()
        self.summary = QLabel("Run a prompt to see every head's attention.")
        self.summary.setObjectName("attentionSummary")
        self.summary.setWordWrap(True)

        self.grid = HeatmapView(title="All heads (click one)", x_label="head", y_label="layer",
                                colorbar_label="attention")
        self.grid.setObjectName("attentionGrid")
        self.grid.set_readout_hint("Rows are layers, columns heads; long prompts are max-pooled "
                                  "to fit. Click a head to focus it; drag it onto the patch "
                                  "plan to patch its output.")
        self.grid.enable_cell_drag(self.head_mime)
        self.focused = HeatmapView(title="", x_label="key (attended to)",
                                   y_label="query (attending)", colorbar_label="attention")
        self.focused.setObjectName("attentionFocused")
        self.focused.set_readout_hint("Hover a cell for its value; click a row to make it the "
                                     "query. Scroll to zoom, drag to pan, double-click to reset.")
        self.strip_label = QLabel(" ")
        self.strip_label.setWordWrap(True)
        self.strip = TokenStrip()
        self.strip.setObjectName("attentionStrip")
        self.strip.setMaximumHeight(110)
        self.strip.setToolTip("Each key token coloured by the attention the selected query pays "
                              "to it in the focused head. Click a token to make it the query.")
        right = QWidget()
        rlay = QVBoxLayout(right)
        rlay.setContentsMargins(0, 0, 0, 0)
        rlay.addWidget(self.focused, 1)
        rlay.addWidget(self.strip_label)
        rlay.addWidget(self.strip)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.grid)
        self.splitter.addWidget(right)
        self.splitter.setSizes([500, 600])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(row1)
        lay.addLayout(row2)
        lay.addWidget(self.message)
        lay.addWidget(self.notes)
        lay.addWidget(self.summary)
        lay.addWidget(self.splitter, 1)

        self.item_combo.currentIndexChanged.connect(self._item_changed)
        self.keep_button.toggled.connect(self._keep_toggled)
        self.mode_combo.currentIndexChanged.connect(self._mode_changed)
        self.cmap_combo.currentTextChanged.connect(self._cmap_changed)
        self.scale_combo.currentIndexChanged.connect(lambda _: self.redraw())
        self.bos_check.toggled.connect(lambda _: self.redraw())
        self.layer_combo.currentIndexChanged.connect(self._layer_view_changed)
        self.pins.sig_focus.connect(self._pin_focused)
        self.pins.sig_changed.connect(self._pins_changed)
        self.grid.sig_cell_clicked.connect(self._grid_clicked)
        self.grid.set_tooltip_fn(self._grid_tooltip)
        self.focused.set_tooltip_fn(self._focused_tooltip)
        self.focused.sig_cell_hovered.connect(self._focused_hovered)
        self.focused.sig_cell_clicked.connect(lambda q, k: self._select_query(q, emit=True))
        self.strip.sig_position_hovered.connect(self._strip_hovered)
        self.strip.sig_position_clicked.connect(lambda p: self._select_query(p, emit=True))

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        """Side by side when wide, stacked when the dock is narrow."""
        wide = event.size().width() >= 900
        orientation = Qt.Orientation.Horizontal if wide else Qt.Orientation.Vertical
        if self.splitter.orientation() != orientation:
            self.splitter.setOrientation(orientation)
        super().resizeEvent(event)

    # -- public API --------------------------------------------------------------------------------
    def set_result(self, result) -> None:
        """Show an AttentionResult. Keeps the focused head, options and batch item if still valid."""
        old_label = self.item().label if self._result is not None else None
        self._result = result
        self._pool_cache.clear()
        self._stats_cache.clear()
        self.message.hide()
        self.notes.setText(" ".join(result.notes))
        self.notes.setVisible(bool(result.notes))
        self.item_combo.blockSignals(True)
        self.item_combo.clear()
        for it in result.items:
            self.item_combo.addItem(_short(it.label), it.label)
            self.item_combo.setItemData(self.item_combo.count() - 1, it.label,
                                        Qt.ItemDataRole.ToolTipRole)
        labels = [it.label for it in result.items]
        self._item = labels.index(old_label) if old_label in labels else 0
        self.item_combo.setCurrentIndex(self._item)
        self.item_combo.setEnabled(len(labels) > 1)
        self.item_combo.blockSignals(False)
        self.layer_combo.blockSignals(True)
        previous = self.layer_combo.currentData()
        if self._wanted_layer_view is not None:
            previous = self._wanted_layer_view
        self.layer_combo.clear()
        self.layer_combo.addItem("All layers", -1)
        for layer in result.layers:
            self.layer_combo.addItem(f"Layer {layer} larger", layer)
        idx = self.layer_combo.findData(previous)
        self.layer_combo.setCurrentIndex(max(idx, 0))
        if idx >= 0:
            self._wanted_layer_view = None
        self.layer_combo.blockSignals(False)
        if self._layer not in result.layers:
            self._layer = result.layers[0]
        if self._head >= result.n_heads:
            self._head = 0
        self.pins.set_focused(self._layer, self._head)
        self.export_button.setEnabled(True)
        self._sync_keep()
        self.redraw(reset_view=True)

    def clear(self, text: str = "Run a prompt to see every head's attention.") -> None:
        """Forget the result (e.g. a new model was loaded: the old patterns no longer apply)."""
        self._idle_text = text
        self._result = None
        self._pool_cache.clear()
        self._stats_cache.clear()
        self._grid_geom = {}
        for view in (self.grid, self.focused):
            view.clear()
        self.strip.clear()
        self.strip_label.setText(" ")
        self.item_combo.clear()
        self.notes.hide()
        self.export_button.setEnabled(False)
        self.summary.setText(text)

    def select_item(self, label: str) -> None:
        """Show the batch item called ``label`` (e.g. the scanner's repeated tokens)."""
        idx = self.item_combo.findData(label)
        if idx >= 0:
            self.item_combo.setCurrentIndex(idx)

    def set_kept(self, labels) -> None:
        self._kept = set(labels)
        self._sync_keep()

    def set_head(self, layer: int, head: int) -> None:
        """Focus a head (from the shared selection); emits nothing."""
        if head < 0:
            head = self._head  # a whole layer was selected: keep the head
        r = self._result
        if r is not None and not (layer in r.layers and 0 <= head < r.n_heads):
            return  # a head this result does not hold (a subset of layers): keep the focus
        self._layer, self._head = layer, head
        self.pins.set_focused(layer, head)
        if r is not None:
            self._draw_grid_outline()
            self._draw_focused(reset_view=False)

    def set_position(self, position: int) -> None:
        self._select_query(position, emit=False)

    def show_error(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def set_busy(self, busy: bool, text: str = "Computing attention…") -> None:
        if busy:
            self.summary.setText(text)
        elif self._result is not None:
            self._update_summary()
        else:  # failed or cancelled with nothing to show: never "Computing…" forever
            self.summary.setText(self._idle_text)

    def result(self):
        return self._result

    def item(self):
        return self._result.items[self._item] if self._result is not None else None

    def mode(self) -> str:
        return self.mode_combo.currentData()

    def focused_head(self) -> tuple[int, int]:
        return self._layer, self._head

    def query_position(self) -> int:
        it = self.item()
        if it is None:
            return -1
        return self._query if 0 <= self._query < it.n_tokens else it.n_tokens - 1

    def values(self) -> np.ndarray:
        """The current item's full-resolution array for the shown mode: [layers, heads, q, k]."""
        it = self.item()
        if self.mode() == "scores" and it.scores is not None:
            return it.scores
        return it.patterns

    def focused_values(self) -> np.ndarray:
        """The focused head at full resolution, as shown (BOS column NaN when hidden)."""
        row = self._row(self._layer)
        data = self.values()[row, self._head]
        if self.bos_check.isChecked():
            data = data.copy()
            data[:, 0] = np.nan
        return data

    def grid_geometry(self) -> dict:
        """Where tiles are: {'layers': [...], 'fraction': f, 'factor': pooling} (for tests/tools)."""
        return dict(self._grid_geom)

    def tile_center(self, layer: int, head: int):
        """Widget position of a head's tile centre in the grid's viewport (for clicks)."""
        geom = self._grid_geom
        r = geom["layers"].index(layer)
        half = geom["fraction"] / 2
        return self.grid.data_to_widget(head + half, r + half)

    # -- drawing ------------------------------------------------------------------------------------
    def redraw(self, reset_view: bool = False) -> None:
        if self._result is None:
            return
        self._draw_grid()
        self._draw_focused(reset_view=reset_view)

    def _row(self, layer: int) -> int:
        return self._result.layers.index(layer)

    def _is_scores(self) -> bool:
        return self.mode() == "scores" and self.item().scores is not None

    def _shared_levels(self) -> tuple[float, float]:
        key = (self._item, self._is_scores(), self.bos_check.isChecked())
        if key not in self._stats_cache:
            v = self.values()
            view = v[..., 1:] if self.bos_check.isChecked() and v.shape[-1] > 1 else v
            hi = _fmax(view)
            lo = _fmin(view) if self._is_scores() else 0.0
            if not math.isfinite(hi):
                lo, hi = 0.0, 1.0
            self._stats_cache[key] = (lo, hi)
        return self._stats_cache[key]

    def _pooled(self, rows: tuple[int, ...], target: int) -> tuple[np.ndarray, int]:
        it = self.item()
        n = it.n_tokens
        factor = max(1, math.ceil(n / target))
        hide = self.bos_check.isChecked()
        key = (self._item, self._is_scores(), hide, factor, rows)
        if key not in self._pool_cache:
            v = self.values()
            data = v[rows[0]:rows[0] + 1] if len(rows) == 1 else v
            pooled = block_max(data, factor, skip_first_col=hide)
            self._pool_cache = {k: val for k, val in self._pool_cache.items() if k[0] == key[0]}
            self._pool_cache[key] = (np.ascontiguousarray(pooled, dtype=np.float32), factor)
        return self._pool_cache[key]

    def _draw_grid(self) -> None:
        if self._result is None:
            return
        result = self._result
        one = self.layer_combo.currentData()
        one = -1 if one is None else one
        layers = list(result.layers) if one < 0 else [one]
        rows = tuple(self._row(la) for la in layers)
        tiles, factor = self._pooled(rows, GRID_TILE if one < 0 else LAYER_TILE)
        per_head = self.scale_combo.currentData() == "per-head"
        if per_head:
            flat = tiles.reshape(*tiles.shape[:2], -1)
            hi = np.fmax.reduce(flat, axis=-1)[..., None, None]
            lo = (np.fmin.reduce(flat, axis=-1)[..., None, None] if self._is_scores()
                  else np.zeros_like(hi))
            span = np.where(hi > lo, hi - lo, 1.0)
            with np.errstate(invalid="ignore"):
                tiles = (tiles - lo) / span
            levels = (0.0, 1.0)
        else:
            levels = self._shared_levels()
        t = tiles.shape[-1]
        gap = 1 if t < 48 else 2
        image, frac = mosaic(tiles, gap)
        step = t + gap
        extent = (image.shape[0] / step, image.shape[1] / step)
        n_heads = tiles.shape[1]
        rects = [(h, r, frac, frac) for r in range(len(layers)) for h in range(n_heads)]
        self._grid_geom = {"layers": layers, "fraction": frac, "factor": factor,
                           "n_heads": n_heads, "tile_px": t, "gap_px": gap}
        self.grid.set_image(image, levels, extent, cell_rects=rects)
        self.grid.y_axis.set_labels([f"L{la}" for la in layers],
                                    [r + frac / 2 for r in range(len(layers))])
        self.grid.x_axis.set_labels([f"H{h}" for h in range(n_heads)],
                                    [h + frac / 2 for h in range(n_heads)])
        self.grid.set_colormap(self.cmap_combo.currentText())
        what = "score" if self._is_scores() else "attention"
        self.grid.set_colorbar_label(
            ("score, each head's min..max → 0..1" if self._is_scores() else "attention / head max")
            if per_head else what)
        pooled = f" · max-pooled ×{factor}" if factor > 1 else ""
        self.grid.set_title(f"All heads{pooled} (click one)")
        self._draw_grid_outline()

    def _draw_grid_outline(self) -> None:
        geom = self._grid_geom
        self._draw_pins()
        if not geom or self._layer not in geom["layers"]:
            self.grid.set_overlay("focus", None)
            return
        r = geom["layers"].index(self._layer)
        f = geom["fraction"]
        pad = 0.04
        self.grid.set_overlay("focus", (self._head - pad, r - pad, f + 2 * pad, f + 2 * pad),
                              "#e4002b", width=2.5)

    def _draw_pins(self) -> None:
        """An amber frame around each pinned head's tile."""
        geom = self._grid_geom
        pinned = set(self.pins.pinned())
        for key in [k for k in self.grid.overlay_keys() if k.startswith("pin ")]:
            if key not in {f"pin {la} {h}" for la, h in pinned}:
                self.grid.set_overlay(key, None)
        if not geom:
            return
        f = geom["fraction"]
        for layer, head in pinned:
            key = f"pin {layer} {head}"
            if layer in geom["layers"] and head < geom["n_heads"]:
                r = geom["layers"].index(layer)
                self.grid.set_overlay(key, (head, r, f, f), "#f0a000", width=2.0)
            else:
                self.grid.set_overlay(key, None)

    def _draw_focused(self, reset_view: bool = False) -> None:
        it = self.item()
        data = self.focused_values()
        per_head = self.scale_combo.currentData() == "per-head"
        if per_head:
            hi = _fmax(data)
            lo = _fmin(data) if self._is_scores() else 0.0
            levels = (lo, hi) if math.isfinite(hi) else (0.0, 1.0)
        else:
            levels = self._shared_levels()
        shape_changed = self.focused.image.image is None or \
            self.focused.image.image.shape != data.shape
        self.focused.set_matrix(data, levels, it.str_tokens, it.str_tokens,
                                reset_view=reset_view or shape_changed)
        self.focused.set_colormap(self.cmap_combo.currentText())
        mode = "scores (pre-softmax)" if self._is_scores() else "pattern"
        missing = self._layer not in self._result.layers_with_pattern
        if self._is_scores():
            missing = self._layer not in self._result.layers_with_scores
        self.focused.set_title(f"L{self._layer} H{self._head} · {mode}"
                               + (" — not available for this layer" if missing else ""))
        self.focused.set_colorbar_label("score" if self._is_scores() else "attention")
        self._draw_strip()
        self._update_summary()

    def _draw_strip(self) -> None:
        it = self.item()
        q = self.query_position()
        pattern = it.patterns[self._row(self._layer), self._head, q].astype(np.float64)
        values = pattern.copy()
        values[q + 1:] = np.nan
        if self.bos_check.isChecked():
            values[0] = np.nan
        if self.strip.tokens() != list(it.str_tokens):
            self.strip.set_tokens(list(it.str_tokens))
        self._strip_values = pattern  # hovering a token reads its value (no per-item tooltips)
        finite = values[np.isfinite(values)]
        self.strip.set_values(values, vmax=float(finite.max()) if finite.size else 1.0,
                              rgb=(8, 48, 107))
        self.strip.set_selected(q)
        self.strip_label.setText(f"Attention from query '{visible(it.str_tokens[q])}' (pos {q}) "
                                 f"in L{self._layer} H{self._head} to each key:")
        self.focused.set_overlay("query", (0, q, it.n_tokens, 1), "#e4002b", width=1.5)

    def _update_summary(self) -> None:
        it, result = self.item(), self._result
        nbytes = sum(x.patterns.nbytes + (x.scores.nbytes if x.scores is not None else 0)
                     for x in result.items)
        size = f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KiB"
        trunc = f" (truncated from {it.truncated_from})" if it.truncated_from else ""
        self.summary.setText(f"{it.n_tokens} tokens{trunc} · {len(result.layers)} layers × "
                             f"{result.n_heads} heads · {len(result.items)} prompt(s) · "
                             f"{size} of attention values")

    # -- tooltips --------------------------------------------------------------------------------------
    def describe(self, layer: int, head: int, q: int, k: int) -> str:
        """The hover text of one cell: "query 'cat' (pos 7) -> key 'sat' (pos 3): 0.82"."""
        it = self.item()
        v = float(self.values()[self._row(layer), head, q, k])
        if self.bos_check.isChecked() and k == 0:
            value = "hidden (BOS column)"
        elif k > q and self._is_scores():
            value = "masked (future key)"
        elif not math.isfinite(v):
            value = "not available"
        else:
            value = f"{v:.2f}"
        return (f"query '{visible(it.str_tokens[q])}' (pos {q}) -> "
                f"key '{visible(it.str_tokens[k])}' (pos {k}): {value}")

    def _focused_tooltip(self, x: float, y: float) -> str | None:
        it = self.item()
        if it is None:
            return None
        q, k = int(y), int(x)
        if not (0 <= q < it.n_tokens and 0 <= k < it.n_tokens):
            return None
        return self.describe(self._layer, self._head, q, k)

    def _grid_tooltip(self, x: float, y: float) -> str | None:
        geom = self._grid_geom
        if not geom or self.item() is None:
            return None
        r, h = int(y), int(x)
        if not (0 <= r < len(geom["layers"]) and 0 <= h < geom["n_heads"]):
            return None
        layer, f = geom["layers"][r], geom["fraction"]
        fx, fy = (x - h) / f, (y - r) / f
        head = f"L{layer} H{h}"
        if fx >= 1 or fy >= 1:
            return f"{head} · click to focus, drag onto the patch plan"
        n, factor = self.item().n_tokens, geom["factor"]
        nb = math.ceil(n / factor)
        qb, kb = min(int(fy * nb), nb - 1), min(int(fx * nb), nb - 1)
        if factor == 1:
            return f"{head}: {self.describe(layer, h, qb, kb)}"
        q0, q1 = qb * factor, min(n, (qb + 1) * factor) - 1
        k0, k1 = kb * factor, min(n, (kb + 1) * factor) - 1
        block = self.values()[self._row(layer), h, q0:q1 + 1, k0:k1 + 1]
        if self.bos_check.isChecked() and k0 == 0:
            block = block[:, 1:]
        v = _fmax(block)
        value = f"{v:.2f}" if math.isfinite(v) else "masked"
        return (f"{head}: queries {q0}–{q1} -> keys {k0}–{k1}: max {value} "
                f"(pooled ×{factor}; click to focus)")

    # -- interaction ----------------------------------------------------------------------------------
    def grid_head(self, row: int, col: int) -> tuple[int, int] | None:
        """The (layer, head) under a grid cell, or None outside the grid."""
        geom = self._grid_geom
        if not geom or not (0 <= row < len(geom["layers"]) and 0 <= col < geom["n_heads"]):
            return None
        return geom["layers"][row], col

    def head_mime(self, row: int, col: int):
        """What dragging a head tile carries: the head's output (z) at all positions, in the
        patch plan's format."""
        head = self.grid_head(row, col)
        if head is None:
            return None
        return component_mime([{"component": "z", "layer": head[0], "index": head[1],
                                "positions": []}])

    def _grid_clicked(self, row: int, col: int) -> None:
        head = self.grid_head(row, col)
        if head is None:
            return
        layer = head[0]
        self.set_head(layer, col)
        self.sig_head_clicked.emit(layer, col)

    def _strip_hovered(self, pos: int) -> None:
        """Highlight the token's row and column, and say what the query pays to it."""
        self.focused.highlight_cross(pos if pos >= 0 else None, pos if pos >= 0 else None)
        it = self.item()
        if it is None or not 0 <= pos < it.n_tokens:
            return
        q = self.query_position()
        value = "a future key" if pos > q else f"{float(self._strip_values[pos]):.3f}"
        self.strip_label.setText(f"Attention from query '{visible(it.str_tokens[q])}' (pos {q}) "
                                 f"in L{self._layer} H{self._head} to key "
                                 f"'{visible(it.str_tokens[pos])}' (pos {pos}): {value}")

    def _focused_hovered(self, q: int, k: int) -> None:
        self.focused.highlight_cross(q if q >= 0 else None, k if k >= 0 else None)

    def _select_query(self, position: int, emit: bool) -> None:
        it = self.item()
        self._query = position
        if it is None:
            return
        if not -1 <= position < it.n_tokens:
            return
        self._draw_strip()
        if emit:
            self.sig_position_selected.emit(position)

    def _item_changed(self, index: int) -> None:
        if self._result is None or index < 0:
            return
        self._item = index
        self._query = -1
        self._sync_keep()
        self.redraw(reset_view=True)

    def _mode_changed(self, _index: int) -> None:
        if self._result is None:
            return
        if self.mode() == "scores" and self.item().scores is None:
            self.summary.setText("Computing pre-softmax scores…")
            self.sig_scores_needed.emit()
            return
        if self.mode() == "scores" and not self._result.layers_with_scores:
            self.show_error("This model exposes no pre-softmax scores (hook_attn_scores); "
                            "showing the pattern.")
        self.redraw()

    def layer_view(self) -> int:
        """The layer shown larger, or -1 for every layer."""
        data = self.layer_combo.currentData()
        if self._wanted_layer_view is not None:
            return self._wanted_layer_view
        return -1 if data is None else int(data)

    def set_layer_view(self, layer: int) -> None:
        """Show one layer larger (-1: all); kept until a result has that layer."""
        idx = self.layer_combo.findData(layer)
        if idx >= 0:
            self._wanted_layer_view = None
            self.layer_combo.setCurrentIndex(idx)
        else:
            self._wanted_layer_view = int(layer)

    def _layer_view_changed(self, _index: int) -> None:
        self._wanted_layer_view = None
        self._draw_grid()

    def _pin_focused(self, layer: int, head: int) -> None:
        self.set_head(layer, head)
        if self._layer == layer and self._head == head:
            self.sig_head_clicked.emit(layer, head)

    def _pins_changed(self, heads) -> None:
        self._draw_pins()
        self.sig_pins_changed.emit(heads)

    def _cmap_changed(self, name: str) -> None:
        self.grid.set_colormap(name)
        self.focused.set_colormap(name)

    def _keep_toggled(self, checked: bool) -> None:
        it = self.item()
        if it is None:
            return
        if checked:
            self._kept.add(it.label)
        else:
            self._kept.discard(it.label)
        self.sig_keep_toggled.emit(it.label, checked)

    def _sync_keep(self) -> None:
        it = self.item()
        self.keep_button.blockSignals(True)
        self.keep_button.setChecked(it is not None and it.label in self._kept)
        self.keep_button.setEnabled(it is not None)
        self.keep_button.blockSignals(False)

    # -- export data ---------------------------------------------------------------------------------
    def export_arrays(self) -> dict:
        """Values for CSV/NPZ export: the current item's arrays and tokens (plain numpy)."""
        it = self.item()
        out = {"patterns": it.patterns, "layers": np.asarray(self._result.layers),
               "token_ids": np.asarray(it.token_ids),
               "str_tokens": np.asarray(list(it.str_tokens), dtype=str)}
        if it.scores is not None:
            out["scores"] = it.scores
        return out


def _short(text: str, limit: int = 48) -> str:
    text = visible(text) if text.strip() != text or "\n" in text else text
    return text if len(text) <= limit else text[: limit - 1] + "…"
