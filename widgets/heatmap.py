"""A reusable heatmap view: one ImageItem, a colour bar, token tick labels and a throttled hover.

Used by the attention panel (focused head and the layers x heads mosaic) and meant for the
attribution and induction panels too. Data coordinates: cell (row, col) of a matrix covers
x in [col, col + 1], y in [row, row + 1], row 0 at the top. A mosaic uses the same convention
with one unit per tile (see :func:`mosaic`), so ``floor(x), floor(y)`` is always the cell or tile.

The view does no file I/O: ``export_target`` is the pyqtgraph item an exporter should render.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QMimeData, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QDrag, QPainterPath, QPen
from PySide6.QtWidgets import (
    QApplication,
    QGraphicsPathItem,
    QGraphicsRectItem,
    QLabel,
    QSizePolicy,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from widgets.axes import tidy_axis, tidy_plot
from widgets.colors import diverging
from widgets.token_strip import visible

COLORMAPS = ("viridis", "inferno", "magma", "plasma", "cividis", "blues", "turbo", "CET-D1")
MASKED_COLOR = QColor(205, 205, 205)  # cells that are NaN (masked, or not available)


def colormap(name: str) -> pg.ColorMap:
    """A pyqtgraph colour map by name; 'blues' is CircuitsVis's white-to-blue ramp."""
    if name == "blues":
        return pg.ColorMap([0.0, 1.0], [(255, 255, 255), (8, 48, 107)], name="blues")
    if name == "diverging":
        return diverging()
    return pg.colormap.get(name)


def html_lines(text: str) -> str:
    """Plain text, one line per "\n", as the HTML a pyqtgraph label shows."""
    from html import escape

    return "<br>".join(escape(line) for line in text.split("\n"))


def elide(label: str, limit: int = 10) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


class TokenAxis(pg.AxisItem):
    """Axis whose ticks are labels at cell centres (i + 0.5); thins them out to what fits."""

    def __init__(self, orientation: str, **kwargs) -> None:
        super().__init__(orientation, **kwargs)
        self._labels: list[str] = []
        self._positions: np.ndarray = np.zeros(0)
        self.setStyle(textFillLimits=[(0, 0.99)], autoReduceTextSpace=False)

    def set_labels(self, labels: Sequence[str], positions: Sequence[float] | None = None) -> None:
        self._labels = list(labels)
        self._positions = (np.arange(len(self._labels)) + 0.5 if positions is None
                           else np.asarray(positions, dtype=float))
        if self.orientation in ("left", "right"):  # room for the widest label, never clipped
            metrics = pg.QtGui.QFontMetrics(self.font())
            widest = max((metrics.horizontalAdvance(elide(s)) for s in self._labels[:4000]),
                         default=10)
            label = metrics.height() + 6 if self.label.isVisible() else 0
            self.setWidth(min(widest + 14, 150) + label)
        self.picture = None
        self.update()

    def labels(self) -> list[str]:
        return list(self._labels)

    def _extent(self) -> float:
        """Pixels one label needs along the axis."""
        metrics = pg.QtGui.QFontMetrics(self.font() if self.style.get("tickFont") is None
                                        else self.style["tickFont"])
        if self.orientation in ("left", "right"):
            return metrics.height() * 1.1
        widths = [metrics.horizontalAdvance(elide(s)) for s in self._labels[:2000]]
        # Typical, not widest: one long token should not thin out every other label.
        return (float(np.percentile(widths, 90)) if widths else 10.0) + 8

    def tickValues(self, minVal: float, maxVal: float, size: float):  # noqa: N802 (Qt naming)
        if not self._labels or size <= 0:
            return []
        lo, hi = min(minVal, maxVal), max(minVal, maxVal)
        pos = self._positions
        visible_idx = np.nonzero((pos >= lo) & (pos <= hi))[0]
        if visible_idx.size == 0:
            return []
        span = max(hi - lo, 1e-9)
        unit_px = size / span * (pos[1] - pos[0] if pos.size > 1 else 1.0)
        step = max(1, math.ceil(self._extent() / max(unit_px, 1e-9)))
        if step > 1:  # a readable step: 1, 2, 5, 10, 20, 50, ...
            mag = 10 ** math.floor(math.log10(step))
            step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= step)
        chosen = visible_idx[visible_idx % step == 0]
        return [(float(step), [float(pos[i]) for i in chosen])]

    def tickStrings(self, values, scale, spacing):  # noqa: N802 (Qt naming)
        if not self._labels:
            return [""] * len(values)
        index = {round(float(p), 6): i for i, p in enumerate(self._positions)}
        out = []
        for v in values:
            i = index.get(round(float(v), 6))
            out.append(elide(self._labels[i]) if i is not None else "")
        return out


class HeatmapView(QWidget):
    """A heatmap with a colour bar, token axes, zoom/pan, click and hover.

    Signals carry data coordinates; ``sig_cell_*`` carry ``(row, col) = (floor(y), floor(x))``
    for points inside the data. Hover is throttled (``pg.SignalProxy``, 60 Hz).
    """

    sig_cell_clicked = Signal(int, int)
    sig_cell_hovered = Signal(int, int)  # (-1, -1) when the mouse leaves the data
    sig_point_clicked = Signal(float, float)

    def __init__(self, parent=None, title: str = "", x_label: str = "", y_label: str = "",
                 colorbar_label: str = "", aspect_locked: bool = True) -> None:
        super().__init__(parent)
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground("w")
        # pyqtgraph's hint is the layout's natural size (~600 px): docks must be able to shrink.
        self.graphics.setMinimumSize(160, 120)
        self.x_axis = TokenAxis("bottom")
        self.y_axis = TokenAxis("left")
        for axis in (self.x_axis, self.y_axis):
            axis.setPen(pg.mkPen("k"))
            axis.setTextPen(pg.mkPen("k"))
        self.plot: pg.PlotItem = self.graphics.addPlot(axisItems={"bottom": self.x_axis,
                                                                  "left": self.y_axis})
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        tidy_plot(self.plot)  # token axes: "(x0.001)" appeared after their labels when empty
        self.plot.setTitle(title, color="k")
        if x_label:
            self.plot.setLabel("bottom", x_label, color="k")
        if y_label:
            self.plot.setLabel("left", y_label, color="k")
        self.view: pg.ViewBox = self.plot.getViewBox()
        self.view.invertY(True)
        self.view.setAspectLocked(aspect_locked)
        self.background = QGraphicsPathItem()
        self.background.setBrush(QBrush(MASKED_COLOR))
        self.background.setPen(QPen(Qt.PenStyle.NoPen))
        self.background.setZValue(-10)
        self.view.addItem(self.background, ignoreBounds=True)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image)
        self._cmap_name = "viridis"
        self.colorbar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=colormap("viridis"),
                                        interactive=False,
                                        width=14, pen="k", colorMapMenu=False)
        self.colorbar.setImageItem(self.image, insert_in=self.plot)
        tidy_axis(self.colorbar.getAxis("right"))  # 0.8, not "800 (x0.001)"; never "-0.00"
        self.colorbar.getAxis("right").setStyle(showValues=False)  # no scale without data
        self.colorbar.getAxis("right").setPen(pg.mkPen("k"))
        self.colorbar.getAxis("right").setTextPen(pg.mkPen("k"))
        if colorbar_label:
            self.set_colorbar_label(colorbar_label)
        self._overlays: dict[str, QGraphicsRectItem] = {}
        self._tooltip_fn: Callable[[float, float], str | None] | None = None
        self._shape = (0, 0)  # data extent in units: (rows, cols)
        self._hover_cell = (-1, -1)
        self._hover_point: tuple[float, float] | None = None  # data point under the mouse
        self._cross: tuple | None = None
        self.last_tooltip = ""
        self.readout_hint = " "  # what the readout says while nothing is hovered
        self._drag_mime_fn: Callable[[int, int], QMimeData | None] | None = None
        self._press = None
        self.readout = QLabel(" ")
        self.readout.setObjectName("heatmapReadout")
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # A long hover text must not widen the dock; it is clipped (the tooltip shows it whole).
        self.readout.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.graphics, 1)
        lay.addWidget(self.readout)
        scene = self.graphics.scene()
        self._hover_proxy = pg.SignalProxy(scene.sigMouseMoved, rateLimit=60,
                                           slot=self._on_mouse_moved)
        scene.sigMouseClicked.connect(self._on_mouse_clicked)
        self.graphics.viewport().installEventFilter(self)

    # -- data ------------------------------------------------------------------------------------
    def set_image(self, data: np.ndarray, levels: tuple[float, float], extent: tuple[float, float],
                  cell_rects: Sequence[tuple[float, float, float, float]] | None = None,
                  reset_view: bool = True) -> None:
        """Show ``data`` (float32, row-major, NaN = masked) over ``extent = (rows, cols)`` units.

        ``cell_rects`` are the (x, y, w, h) regions where NaN means "masked" and is drawn grey;
        by default the whole extent.
        """
        data = np.ascontiguousarray(data, dtype=np.float32)
        lo, hi = float(levels[0]), float(levels[1])
        if not (math.isfinite(lo) and math.isfinite(hi)):
            lo, hi = 0.0, 1.0
        if hi <= lo:
            hi = lo + 1e-6
        rows, cols = extent
        self._shape = (rows, cols)
        self.image.setImage(data, autoLevels=False, levels=(lo, hi))
        self._refresh_readout()
        self.image.setRect(QRectF(0, 0, cols, rows))
        self.colorbar.setLevels((lo, hi))
        self.colorbar.getAxis("right").setStyle(showValues=True)
        path = QPainterPath()
        for x, y, w, h in (cell_rects if cell_rects is not None else [(0, 0, cols, rows)]):
            path.addRect(QRectF(x, y, w, h))
        self.background.setPath(path)
        if reset_view:
            self.reset_view()

    def set_matrix(self, values: np.ndarray, levels: tuple[float, float],
                   row_labels: Sequence[str] | None = None,
                   col_labels: Sequence[str] | None = None, reset_view: bool = True) -> None:
        """A plain [rows, cols] matrix with one cell per unit and token labels on the axes."""
        rows, cols = values.shape
        self.set_image(values, levels, (rows, cols), reset_view=reset_view)
        self.y_axis.set_labels([visible(s) for s in row_labels] if row_labels is not None
                               else [str(i) for i in range(rows)])
        self.x_axis.set_labels([visible(s) for s in col_labels] if col_labels is not None
                               else [str(i) for i in range(cols)])

    def set_readout_hint(self, text: str) -> None:
        """The readout line's text while no cell is hovered (e.g. what clicking does)."""
        self.readout_hint = text or " "
        if self._hover_point is None:
            self.readout.setText(self.readout_hint)

    def _refresh_readout(self) -> None:
        """New data: the readout describes it at the hovered point, or goes back to the hint.
        A value read from the previous data must never stay on screen."""
        text = None
        if self._hover_point is not None and self._tooltip_fn is not None:
            x, y = self._hover_point
            rows, cols = self._shape
            if 0 <= x < cols and 0 <= y < rows:
                text = self._tooltip_fn(x, y)
        if self.last_tooltip:
            QToolTip.hideText()
        self.last_tooltip = text or ""
        self.readout.setText(text or self.readout_hint)

    def clear(self) -> None:
        """Show nothing (no data, no labels, no overlays)."""
        self.image.clear()
        self.colorbar.getAxis("right").setStyle(showValues=False)
        self._shape = (0, 0)
        self.background.setPath(QPainterPath())
        self.x_axis.set_labels([])
        self.y_axis.set_labels([])
        for key in list(self._overlays):
            self.set_overlay(key, None)
        self._cross = None
        self._hover_cell = (-1, -1)
        self._hover_point = None
        if self.last_tooltip:
            QToolTip.hideText()
        self.last_tooltip = ""
        self.readout.setText(self.readout_hint)

    def set_levels(self, lo: float, hi: float) -> None:
        hi = hi if hi > lo else lo + 1e-6
        self.image.setLevels((lo, hi))
        self.colorbar.setLevels((lo, hi))

    def levels(self) -> tuple[float, float]:
        return tuple(float(v) for v in self.colorbar.levels())

    def set_colormap(self, name: str) -> None:
        self._cmap_name = name
        self.colorbar.setColorMap(colormap(name))

    def colormap_name(self) -> str:
        return self._cmap_name

    def set_title(self, title: str) -> None:
        self.plot.setTitle(title, color="k")

    def set_colorbar_label(self, label: str) -> None:
        self.colorbar.getAxis("right").setLabel(label, color="k")

    def set_tooltip_fn(self, fn: Callable[[float, float], str | None] | None) -> None:
        """``fn(x, y)`` in data coordinates returns the hover text, or None for none."""
        self._tooltip_fn = fn

    def reset_view(self) -> None:
        rows, cols = self._shape
        if rows and cols:
            self.view.setRange(QRectF(0, 0, cols, rows), padding=0.02)

    # -- overlays (row/column highlight, outlines) ---------------------------------------------------
    def overlay_keys(self) -> list[str]:
        return list(self._overlays)

    def set_overlay(self, key: str, rect: tuple[float, float, float, float] | None,
                    color: QColor | str = "#ffffff", fill_alpha: int = 0, width: float = 2.0):
        """Draw (or remove with None) a named rectangle in data coordinates."""
        item = self._overlays.get(key)
        if rect is None:
            if item is not None:
                item.hide()
            return
        if item is None:
            item = QGraphicsRectItem()
            item.setZValue(10)
            self.view.addItem(item, ignoreBounds=True)
            self._overlays[key] = item
        c = QColor(color)
        pen = QPen(c, width)
        pen.setCosmetic(True)
        item.setPen(pen)
        fill = QColor(c)
        fill.setAlpha(fill_alpha)
        item.setBrush(QBrush(fill) if fill_alpha else QBrush(Qt.BrushStyle.NoBrush))
        item.setRect(QRectF(*rect))
        item.show()

    def overlay_rect(self, key: str) -> QRectF | None:
        item = self._overlays.get(key)
        return item.rect() if item is not None and item.isVisible() else None

    def highlight_cross(self, row: int | None, col: int | None) -> None:
        """Highlight a row and a column of a matrix (None removes either)."""
        rows, cols = self._shape
        if (row, col, rows, cols) == self._cross:
            return
        self._cross = (row, col, rows, cols)
        self.set_overlay("row", None if row is None or row < 0 else (0, row, cols, 1),
                         "#ff8c00", fill_alpha=40, width=1)
        self.set_overlay("col", None if col is None or col < 0 else (col, 0, 1, rows),
                         "#ff8c00", fill_alpha=40, width=1)

    # -- coordinates -----------------------------------------------------------------------------
    def data_to_widget(self, x: float, y: float):
        """Widget (viewport) coordinates of a data point: what a test clicks on."""
        scene = self.view.mapViewToScene(QPointF(x, y))
        return self.graphics.mapFromScene(scene)

    def export_target(self) -> pg.PlotItem:
        """The item to hand to pyqtgraph's ImageExporter / SVGExporter (plot + colour bar)."""
        return self.plot

    @contextmanager
    def exporting(self, title: str, keep: Sequence[str] = ()):
        """While exporting: ``title`` instead of the on-screen one, and no selection or hover
        outlines (overlays whose key starts with one of ``keep`` stay, e.g. threshold marks)."""
        hidden = [item for key, item in self._overlays.items()
                  if item.isVisible() and not any(key.startswith(k) for k in keep)]
        old = self.plot.titleLabel.text
        for item in hidden:
            item.hide()
        self.plot.setTitle(html_lines(title), color="k", size="9pt")
        try:
            yield self.plot
        finally:
            for item in hidden:
                item.show()
            self.set_title(old)

    # -- mouse -----------------------------------------------------------------------------------
    def _scene_to_data(self, scene_pos) -> tuple[float, float] | None:
        if not self.view.sceneBoundingRect().contains(scene_pos):
            return None
        p = self.view.mapSceneToView(scene_pos)
        rows, cols = self._shape
        if not (0 <= p.x() < cols and 0 <= p.y() < rows):
            return None
        return p.x(), p.y()

    def _on_mouse_moved(self, args) -> None:
        scene_pos = args[0]
        point = self._scene_to_data(scene_pos)
        if point is None:
            self._hover_left()
            return
        x, y = point
        self._hover_point = (x, y)
        cell = (int(math.floor(y)), int(math.floor(x)))
        if cell != self._hover_cell:  # only on change: fewer Qt calls per mouse move
            self._hover_cell = cell
            self.sig_cell_hovered.emit(*cell)
        text = self._tooltip_fn(x, y) if self._tooltip_fn is not None else None
        if text and text != self.last_tooltip:
            self.last_tooltip = text
            self.readout.setText(text)
            global_pos = self.graphics.mapToGlobal(self.graphics.mapFromScene(scene_pos))
            QToolTip.showText(global_pos, text, self.graphics)

    def _hover_left(self) -> None:
        self._hover_point = None
        if self.last_tooltip:
            self.last_tooltip = ""
            QToolTip.hideText()
            self.readout.setText(self.readout_hint)
        if self._hover_cell != (-1, -1):
            self._hover_cell = (-1, -1)
            self.sig_cell_hovered.emit(-1, -1)

    def _on_mouse_clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        if event.double():  # double-click: back to the whole matrix after zooming
            self.reset_view()
            return
        point = self._scene_to_data(event.scenePos())
        if point is None:
            return
        x, y = point
        event.accept()
        self.sig_point_clicked.emit(x, y)
        self.sig_cell_clicked.emit(int(math.floor(y)), int(math.floor(x)))

    # -- dragging cells out (onto a patch plan) ------------------------------------------------------
    def enable_cell_drag(self, mime_fn: Callable[[int, int], QMimeData | None]) -> None:
        """Press + move on a cell starts a QDrag carrying ``mime_fn(row, col)`` (None: no drag).
        Panning by mouse is turned off (a drag is a drag); the wheel still zooms."""
        self._drag_mime_fn = mime_fn
        self.view.setMouseEnabled(False, False)

    def start_drag(self, mime: QMimeData) -> None:
        drag = QDrag(self.graphics.viewport())
        drag.setMimeData(mime)
        drag.exec(Qt.DropAction.CopyAction)

    def _drag_filter(self, event) -> bool:
        kind = event.type()
        if kind == QEvent.Type.MouseButtonPress and event.button() == Qt.MouseButton.LeftButton:
            self._press = event.position().toPoint()
        elif kind == QEvent.Type.MouseMove and self._press is not None and \
                event.buttons() & Qt.MouseButton.LeftButton:
            if (event.position().toPoint() - self._press).manhattanLength() >= \
                    QApplication.startDragDistance():
                start, self._press = self._press, None
                point = self._scene_to_data(self.graphics.mapToScene(start))
                mime = self._drag_mime_fn(int(math.floor(point[1])), int(math.floor(point[0]))) \
                    if point is not None else None
                if mime is not None:
                    self.start_drag(mime)
                    return True
        elif kind == QEvent.Type.MouseButtonRelease:
            self._press = None
        return False

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt naming)
        if event.type() == QEvent.Type.Leave:
            self._hover_left()
        if self._drag_mime_fn is not None and self._drag_filter(event):
            return True
        return super().eventFilter(obj, event)


# -- numpy helpers for mosaics (no Qt) -------------------------------------------------------------
def block_max(a: np.ndarray, factor: int, skip_first_col: bool = False) -> np.ndarray:
    """Max-pool the last two axes by ``factor`` (NaN ignored; all-NaN blocks stay NaN).

    Max, not mean, so a one-token-wide diagonal (previous-token head) stays visible when a long
    prompt is shown small. Works on views; the big input is read once and never copied (the
    result is a new array unless ``factor`` is 1 and nothing is skipped). ``skip_first_col``
    leaves column 0 out (e.g. an attention sink on BOS): the first column block then holds the
    max of columns 1..factor-1, or NaN.
    """
    if factor <= 1:
        if not skip_first_col:
            return a
        out = np.array(a, dtype=np.float32)
        out[..., 0] = np.nan
        return out
    out = _pool_axis(_pool_axis(a, factor, -2), factor, -1)
    if skip_first_col:
        rest = a[..., :, 1:min(factor, a.shape[-1])]
        out[..., 0] = (np.fmax.reduce(_pool_axis(rest, factor, -2), axis=-1)
                       if rest.shape[-1] else np.nan)
    return out


def _pool_axis(a: np.ndarray, f: int, axis: int) -> np.ndarray:
    a = np.moveaxis(a, axis, -1)
    n = a.shape[-1]
    m = n // f * f
    parts = []
    if m:
        main = a[..., :m].reshape(*a.shape[:-1], m // f, f)
        parts.append(np.fmax.reduce(main, axis=-1))
    if m < n:
        parts.append(np.fmax.reduce(a[..., m:], axis=-1, keepdims=True))
    out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)
    return np.moveaxis(out, -1, axis)


def mosaic(tiles: np.ndarray, gap: int = 1) -> tuple[np.ndarray, float]:
    """Lay out ``tiles[R, C, t, t]`` as one image with ``gap`` NaN pixels between tiles.

    Returns (image, tile_fraction): shown with one unit per tile, tile (r, c) covers
    x in [c, c + tile_fraction], y in [r, r + tile_fraction].
    """
    n_r, n_c, t_r, t_c = tiles.shape
    step_r, step_c = t_r + gap, t_c + gap
    out = np.full((n_r * step_r - gap, n_c * step_c - gap), np.nan, dtype=np.float32)
    view = np.full((n_r, step_r, n_c, step_c), np.nan, dtype=np.float32)
    view[:, :t_r, :, :t_c] = tiles.transpose(0, 2, 1, 3)
    out[:, :] = view.reshape(n_r * step_r, n_c * step_c)[: out.shape[0], : out.shape[1]]
    return out, t_c / step_c
