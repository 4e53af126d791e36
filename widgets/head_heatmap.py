"""A layers × heads heatmap with a symmetric diverging colour bar (direct logit attribution).

Blue is positive and red negative, as in the bar charts beside it (widgets/colors.py)."""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from widgets.axes import tidy_axis, tidy_plot
from widgets.colors import diverging
from widgets.heatmap import html_lines

DIVERGING = diverging()


class HeadHeatmap(QWidget):
    """Layers × heads image with a symmetric diverging colour bar; click a cell to select it."""

    sig_head_clicked = Signal(int, int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground("w")
        self.plot = self.view.addPlot()
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.vb.setMouseEnabled(x=False, y=False)
        self.plot.invertY(True)
        self.plot.setLabel("left", "layer")
        self.plot.setLabel("bottom", "head")
        for name in ("left", "bottom"):
            self.plot.getAxis(name).setTextPen(pg.mkPen("#222"))
            self.plot.getAxis(name).setPen(pg.mkPen("#444"))
        self.image = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image)
        self.colorbar = pg.ColorBarItem(values=(-1, 1), colorMap=DIVERGING, interactive=False,
                                        label="direct logit attribution", width=18,
                                        colorMapMenu=False)
        self.colorbar.setImageItem(self.image, insert_in=self.plot)
        self.colorbar.axis.setTextPen(pg.mkPen("#222"))
        self.colorbar.axis.setPen(pg.mkPen("#444"))
        tidy_plot(self.plot)
        tidy_axis(self.colorbar.axis)
        self.outline = pg.PlotDataItem(pen=pg.mkPen((255, 170, 0), width=3))
        self.plot.addItem(self.outline)
        self.hover_line = QLabel(" ")
        self.hover_line.setObjectName("heatmapHover")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.view, 1)
        lay.addWidget(self.hover_line)
        self.values = np.zeros((0, 0), dtype=np.float32)
        self.lower = self.upper = None
        self.hovered = (-1, -1)
        self._proxy = pg.SignalProxy(self.plot.scene().sigMouseMoved, rateLimit=30,
                                     slot=self._on_moved)
        self.plot.scene().sigMouseClicked.connect(self._on_clicked)

    def set_data(self, values: np.ndarray, lower=None, upper=None) -> None:
        self.values = np.ascontiguousarray(values, dtype=np.float32)
        self.lower, self.upper = lower, upper
        n_layers, n_heads = self.values.shape
        m = float(np.nanmax(np.abs(self.values))) if self.values.size else 1.0
        m = m if m > 0 and math.isfinite(m) else 1.0
        self.image.setImage(self.values, levels=(-m, m), autoLevels=False)
        self.image.setRect(0, 0, n_heads, n_layers)
        self.colorbar.setLevels((-m, m))
        step_h = max(1, math.ceil(n_heads / 24))
        step_l = max(1, math.ceil(n_layers / 32))
        self.plot.getAxis("bottom").setTicks(
            [[(h + 0.5, str(h)) for h in range(0, n_heads, step_h)]])
        self.plot.getAxis("left").setTicks(
            [[(layer + 0.5, str(layer)) for layer in range(0, n_layers, step_l)]])
        self.plot.setRange(xRange=(0, n_heads), yRange=(0, n_layers), padding=0)
        self.hover_line.setText(" ")

    def clear(self) -> None:
        self.values = np.zeros((0, 0), dtype=np.float32)
        self.lower = self.upper = None
        self.image.clear()
        self.outline.setData([], [])
        self.hover_line.setText(" ")

    @contextmanager
    def exporting(self, title: str):
        """While exporting: ``title`` and no selected-head outline."""
        old = self.plot.titleLabel.text
        shown = self.outline.isVisible()
        self.outline.hide()
        self.plot.setTitle(html_lines(title), color="#222", size="9pt")
        try:
            yield self.view.ci
        finally:
            self.outline.setVisible(shown)
            self.plot.setTitle(old, color="#222", size="10pt")

    def set_highlight(self, layer: int, head: int) -> None:
        n_layers, n_heads = self.values.shape if self.values.ndim == 2 else (0, 0)
        if not 0 <= layer < n_layers or head >= n_heads:
            self.outline.setData([], [])
            return
        x0, x1 = (0, n_heads) if head < 0 else (head, head + 1)
        self.outline.setData([x0, x1, x1, x0, x0], [layer, layer, layer + 1, layer + 1, layer])

    def cell_at(self, scene_pos) -> tuple[int, int]:
        if self.values.size == 0 or not self.plot.vb.sceneBoundingRect().contains(scene_pos):
            return -1, -1
        p = self.plot.vb.mapSceneToView(scene_pos)
        layer, head = int(math.floor(p.y())), int(math.floor(p.x()))
        if 0 <= layer < self.values.shape[0] and 0 <= head < self.values.shape[1]:
            return layer, head
        return -1, -1

    def cell_point(self, layer: int, head: int):
        scene = self.plot.vb.mapViewToScene(QPointF(head + 0.5, layer + 0.5))
        return self.view.mapFromScene(scene)

    def hover_text(self, layer: int, head: int) -> str:
        if layer < 0:
            return ""
        text = f"L{layer}H{head}: {self.values[layer, head]:+.4g}"
        if self.lower is not None and self.upper is not None:
            text += f"  (range {self.lower[layer, head]:+.3g} … {self.upper[layer, head]:+.3g})"
        return text

    def _on_moved(self, event) -> None:
        cell = self.cell_at(event[0])
        if cell != self.hovered:
            self.hovered = cell
            self.hover_line.setText(self.hover_text(*cell) or " ")

    def _on_clicked(self, event) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            layer, head = self.cell_at(event.scenePos())
            if layer >= 0:
                self.sig_head_clicked.emit(layer, head)
