"""A reusable pyqtgraph bar chart over named categories: labelled axes, hover values, clicks.

Bars are coloured by sign (blue positive, red negative: widgets/colors.py, as in every heatmap). Optional per-bar spread (error bars from
``lower`` to ``upper``, e.g. min/max over a batch of prompts) and per-sample dots. Category labels
are thinned automatically so they never overlap; the hover line always gives the full label.
Used by the attribution panel; any panel that plots one number per component can reuse it.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor, QFontMetrics
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from widgets.axes import tidy_plot
from widgets.colors import NEGATIVE, POSITIVE
from widgets.heatmap import html_lines

HIGHLIGHT = QColor(255, 170, 0)


class CategoryAxis(pg.AxisItem):
    """An axis whose integer ticks are category names, thinned to fit the available length."""

    def __init__(self, orientation: str, **kwargs) -> None:
        super().__init__(orientation, **kwargs)
        self.labels: list[str] = []

    def set_labels(self, labels: list[str]) -> None:
        self.labels = list(labels)
        self.picture = None
        self.update()

    def tickValues(self, minVal, maxVal, size):  # noqa: N802 (pyqtgraph API)
        n = len(self.labels)
        if n == 0 or size <= 0:
            return []
        lo = max(0, math.ceil(min(minVal, maxVal) - 1e-9))
        hi = min(n - 1, math.floor(max(minVal, maxVal) + 1e-9))
        if hi < lo:
            return []
        metrics = QFontMetrics(self.font())
        if self.orientation in ("bottom", "top"):
            need = max(metrics.horizontalAdvance(s) for s in self.labels) + 8
        else:
            need = metrics.height() + 2
        per_unit = size / max(abs(maxVal - minVal), 1e-9)  # pixels per category
        step = max(1, math.ceil(need / max(per_unit, 1e-9)))
        return [(float(step), [float(v) for v in range(lo, hi + 1) if v % step == 0])]

    def tickStrings(self, values, scale, spacing):  # noqa: N802 (pyqtgraph API)
        out = []
        for v in values:
            i = int(round(v))
            out.append(self.labels[i] if 0 <= i < len(self.labels) else "")
        return out


class BarChart(QWidget):
    """One value per category. ``set_data`` draws; ``sig_bar_clicked(index)`` on a click,
    ``sig_bar_hovered(index)`` (-1 when off any bar) as the mouse moves, throttled."""

    sig_bar_clicked = Signal(int)
    sig_bar_hovered = Signal(int)

    def __init__(self, orientation: str = "v", parent=None) -> None:
        super().__init__(parent)
        self.orientation = orientation
        self.vertical = orientation == "v"
        self.axis = CategoryAxis("bottom" if self.vertical else "left")
        axis_items = {"bottom" if self.vertical else "left": self.axis}
        self.plot_widget = pg.PlotWidget(axisItems=axis_items, background="w")
        self.plot = self.plot_widget.getPlotItem()
        self.plot.showGrid(x=not self.vertical, y=self.vertical, alpha=0.25)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.vb.setMouseEnabled(x=not self.vertical, y=self.vertical)
        for name in ("left", "bottom"):
            ax = self.plot.getAxis(name)
            ax.setPen(pg.mkPen("#444"))
            ax.setTextPen(pg.mkPen("#222"))
        tidy_plot(self.plot)  # logits are plain numbers; "(x0.001)" or "-0.000" only confuse
        self.value_axis = self.plot.getAxis("left" if self.vertical else "bottom")
        self.value_axis.setStyle(showValues=False)  # no numbers until there is data
        if not self.vertical:
            self.plot.invertY(True)  # first category on top, like a list
        self.zero = pg.InfiniteLine(0, angle=0 if self.vertical else 90, pen=pg.mkPen("#888"))
        self.plot.addItem(self.zero, ignoreBounds=True)
        self.bars: pg.BarGraphItem | None = None
        self.errors: pg.ErrorBarItem | None = None
        self.dots: pg.ScatterPlotItem | None = None
        self.overlay: pg.PlotDataItem | None = None
        self.hover_item = pg.TextItem(color="#111", fill=pg.mkBrush(255, 255, 225, 230),
                                      border=pg.mkPen("#999"), anchor=(0, 1))
        self.hover_item.setZValue(100)
        self.hover_item.hide()
        self.plot.addItem(self.hover_item, ignoreBounds=True)
        self.hover_line = QLabel(" ")
        self.hover_line.setObjectName("barHover")
        self.hover_line.setStyleSheet("color: #333;")
        self.hover_line.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.plot_widget, 1)
        lay.addWidget(self.hover_line)
        self.labels: list[str] = []
        self.origin = 0.0
        self.values = np.zeros(0, dtype=np.float32)
        self.lower: np.ndarray | None = None
        self.upper: np.ndarray | None = None
        self.details: list[str] = []
        self.value_name = "value"
        self.highlighted = -1
        self.hovered = -1
        self._proxy = pg.SignalProxy(self.plot.scene().sigMouseMoved, rateLimit=30,
                                     slot=self._on_mouse_moved)
        self.plot.scene().sigMouseClicked.connect(self._on_mouse_clicked)

    # -- data ---------------------------------------------------------------------------------
    def set_axis_titles(self, category: str, value: str) -> None:
        self.value_name = value
        cat_axis, val_axis = ("bottom", "left") if self.vertical else ("left", "bottom")
        self.plot.setLabel(cat_axis, category)
        self.plot.setLabel(val_axis, value)

    def set_title(self, title: str) -> None:
        self.plot.setTitle(title, color="#222", size="10pt")

    def set_data(self, labels, values, lower=None, upper=None, samples=None,
                 details=None, overlay=None, overlay_name: str = "", origin: float = 0.0) -> None:
        """``values[i]`` for ``labels[i]``; ``lower``/``upper`` draw a spread; ``samples`` [S, n]
        draws one dot per sample; ``details[i]`` extends the hover text; ``overlay`` [n] is a
        line drawn over the bars (e.g. a second estimate of the same quantity). Bars start at
        ``origin`` (e.g. a baseline run's value) and are blue above it, red below."""
        self.origin = float(origin)
        self.zero.setValue(self.origin)
        self.labels = [str(s) for s in labels]
        self.values = np.asarray(values, dtype=np.float64).reshape(-1)
        n = len(self.labels)
        assert self.values.size == n, (self.values.size, n)
        self.lower = None if lower is None else np.asarray(lower, dtype=np.float64).reshape(-1)
        self.upper = None if upper is None else np.asarray(upper, dtype=np.float64).reshape(-1)
        self.details = list(details) if details is not None else [""] * n
        for item in (self.bars, self.errors, self.dots, self.overlay):
            if item is not None:
                self.plot.removeItem(item)
        self.bars = self.errors = self.dots = self.overlay = None
        self.axis.set_labels(self.labels)
        idx = np.arange(n, dtype=np.float64)
        v = np.nan_to_num(self.values)
        o = self.origin
        brushes = [pg.mkBrush(POSITIVE if x >= o else NEGATIVE) for x in v]
        pens = [pg.mkPen(HIGHLIGHT, width=3) if i == self.highlighted else pg.mkPen(None)
                for i in range(n)]
        width = 0.7
        self.value_axis.setStyle(showValues=n > 0)
        if n == 0:
            self.hover_item.hide()
            self.hovered = -1
            self.hover_line.setText(" ")
            return
        if self.vertical:
            self.bars = pg.BarGraphItem(x=idx, height=np.abs(v - o), y0=np.minimum(v, o),
                                        width=width, brushes=brushes, pens=pens)
        else:
            self.bars = pg.BarGraphItem(y=idx, width=np.abs(v - o), x0=np.minimum(v, o),
                                        height=width, brushes=brushes, pens=pens)
        self.plot.addItem(self.bars)
        if self.lower is not None and self.upper is not None and n:
            lo, hi = v - self.lower, self.upper - v
            pen = pg.mkPen("#222", width=1.2)
            if self.vertical:
                self.errors = pg.ErrorBarItem(x=idx, y=v, top=hi, bottom=lo, beam=0.25, pen=pen)
            else:
                self.errors = pg.ErrorBarItem(x=v, y=idx, right=hi, left=lo, beam=0.25, pen=pen)
            self.plot.addItem(self.errors)
        if samples is not None and np.asarray(samples).shape[0] > 1:
            s = np.asarray(samples, dtype=np.float64)
            pos = np.repeat(idx[None, :], s.shape[0], axis=0).reshape(-1)
            val = s.reshape(-1)
            xs, ys = (pos, val) if self.vertical else (val, pos)
            self.dots = pg.ScatterPlotItem(x=xs, y=ys, size=5, pen=pg.mkPen(None),
                                           brush=pg.mkBrush(40, 40, 40, 110))
            self.plot.addItem(self.dots)
        if overlay is not None:
            if overlay_name and self.plot.legend is None:
                self.plot.addLegend(offset=(-10, 10), labelTextColor="#222",
                                    brush=pg.mkBrush(255, 255, 255, 200))
            o = np.asarray(overlay, dtype=np.float64).reshape(-1)
            xs, ys = (idx, o) if self.vertical else (o, idx)
            self.overlay = pg.PlotDataItem(xs, ys, pen=pg.mkPen((230, 140, 20), width=2),
                                           symbol="o", symbolSize=5,
                                           symbolBrush=(230, 140, 20), name=overlay_name)
            self.plot.addItem(self.overlay)
        self.hover_item.hide()
        self.hovered = -1
        self.hover_line.setText(" ")
        self._fit()

    def clear(self) -> None:
        self.set_data([], [])

    def _fit(self) -> None:
        n = len(self.labels)
        vals = [self.values, np.full(1, self.origin)]
        for extra in (self.lower, self.upper):
            if extra is not None:
                vals.append(extra)
        if self.dots is not None:
            vals.append(np.asarray(self.dots.data["y" if self.vertical else "x"]))
        if self.overlay is not None:
            vals.append(np.asarray(self.overlay.yData if self.vertical else self.overlay.xData))
        allv = np.concatenate([np.nan_to_num(np.asarray(a, dtype=np.float64)).ravel()
                               for a in vals])
        lo, hi = float(allv.min()), float(allv.max())
        pad = 0.08 * max(hi - lo, 1e-6)
        cat = (-0.6, max(n, 1) - 0.4)
        if self.vertical:
            self.plot.setRange(xRange=cat, yRange=(lo - pad, hi + pad), padding=0)
        else:
            self.plot.setRange(yRange=cat, xRange=(lo - pad, hi + pad), padding=0)

    @contextmanager
    def exporting(self, title: str):
        """While exporting: ``title``, no hover box and no selected-bar outline."""
        old_title, old_highlight = self.plot.titleLabel.text, self.highlighted
        self.hover_item.hide()
        self.set_highlight(-1)
        self.plot.setTitle(html_lines(title), color="#222", size="9pt")
        try:
            yield self.plot
        finally:
            self.set_highlight(old_highlight)
            self.set_title(old_title)

    def set_highlight(self, index: int) -> None:
        """Outline one bar (e.g. the selected layer or head); -1 clears."""
        self.highlighted = index
        if self.bars is not None:
            pens = [pg.mkPen(HIGHLIGHT, width=3) if i == index else pg.mkPen(None)
                    for i in range(len(self.labels))]
            self.bars.setOpts(pens=pens)

    # -- hover and click ----------------------------------------------------------------------
    def index_at(self, scene_pos) -> int:
        """The bar under a scene position, or -1."""
        if not self.labels or not self.plot.vb.sceneBoundingRect().contains(scene_pos):
            return -1
        p = self.plot.vb.mapSceneToView(scene_pos)
        coord = p.x() if self.vertical else p.y()
        i = int(round(coord))
        if 0 <= i < len(self.labels) and abs(coord - i) <= 0.45:
            return i
        return -1

    def bar_point(self, index: int):
        """The bar's centre in ``plot_widget`` coordinates (a QPoint), for tests and automation."""
        v = float(np.nan_to_num(self.values[index])) / 2
        view = QPointF(index, v) if self.vertical else QPointF(v, index)
        scene = self.plot.vb.mapViewToScene(view)
        return self.plot_widget.mapFromScene(scene)

    def hover_text(self, index: int) -> str:
        if not 0 <= index < len(self.labels):
            return ""
        text = f"{self.labels[index]}: {self.values[index]:+.4g}"
        if self.lower is not None and self.upper is not None:
            text += f"  (range {self.lower[index]:+.3g} … {self.upper[index]:+.3g})"
        if self.details and self.details[index]:
            text += f"  · {self.details[index]}"
        return text

    def show_hover(self, index: int) -> None:
        self.hovered = index
        if index < 0:
            self.hover_item.hide()
            self.hover_line.setText(" ")
        else:
            text = self.hover_text(index)
            self.hover_line.setText(text)
            self.hover_item.setText(f"{self.labels[index]}\n{self.values[index]:+.4g}")
            v = float(np.nan_to_num(self.values[index]))
            self.hover_item.setPos(*((index, v) if self.vertical else (v, index)))
            self.hover_item.show()
        self.sig_bar_hovered.emit(index)

    def _on_mouse_moved(self, event) -> None:
        index = self.index_at(event[0])
        if index != self.hovered:
            self.show_hover(index)

    def _on_mouse_clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        index = self.index_at(event.scenePos())
        if index >= 0:
            self.sig_bar_clicked.emit(index)
