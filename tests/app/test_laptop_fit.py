"""Every panel fits a 1366x768 laptop screen: controls on screen, the plot gets the height.

The window is resized to 1366x768 with content in every panel. For each dock: no scrollbar, every
visible control lies inside the dock's viewport and inside each of its parents (not clipped by a
splitter pane or a tab), at least its minimum size; the panel's main plot is at least half the
panel's height. Screenshots of each panel go to tests/artifacts/fit_*.png.
"""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QLineEdit,
    QSlider,
)

from app.dock_scroll import PanelScrollArea
from tests.app.conftest import run_prompt_and_wait

PROMPT = "When John and Mary went to the store, John gave a drink to"
CONTROLS = (QAbstractButton, QComboBox, QAbstractSpinBox, QLineEdit, QSlider)


def _binding(window, name):
    return next(b for b in window.bindings if b.object_name == name)


def _plot(name, panel):
    """The panel's main view: what must get most of the height."""
    return {"predictionsDock": lambda: panel.table,
            "attributionDock": lambda: panel.lens_chart.plot_widget,
            "attentionDock": lambda: panel.grid.graphics,
            "inductionDock": lambda: panel.heat.graphics,
            "patchingDock": lambda: panel.heatmap.graphics,
            "featuresDock": lambda: panel.dashboard.contexts}[name]()


def _inside_an_item_view(w, panel) -> bool:
    p = w.parentWidget()
    while p is not None and p is not panel:
        if isinstance(p, QAbstractItemView):
            return True  # cell editors, header buttons: the view scrolls them by design
        p = p.parentWidget()
    return False


def _clipping_problems(scroll, panel) -> list[str]:
    viewport = scroll.viewport()
    problems = []
    from PySide6.QtWidgets import QWidget

    for w in (c for c in panel.findChildren(QWidget) if isinstance(c, CONTROLS)):
        if not w.isVisibleTo(panel) or _inside_an_item_view(w, panel):
            continue
        if isinstance(w.parentWidget(), (QAbstractSpinBox, QComboBox)) or \
                (w.parentWidget() is not None and w.parentWidget().inherits("QTabBar")):
            continue  # parts of a spin box or combo box; the tab bar's own scroll arrows
        name = f"{type(w).__name__} {w.objectName() or getattr(w, 'text', lambda: '')()!r}"
        rect = QRect(w.mapTo(viewport, QPoint(0, 0)), w.size())
        if not viewport.rect().contains(rect):
            problems.append(f"{name} at {rect} is outside the viewport {viewport.rect()}")
        p = w.parentWidget()
        while p is not None and p is not panel:
            mine = QRect(w.mapTo(p, QPoint(0, 0)), w.size())
            if not p.rect().contains(mine):
                problems.append(f"{name} is clipped by its parent {type(p).__name__}")
                break
            p = p.parentWidget()
        hint = w.minimumSizeHint()
        if w.width() < hint.width() - 1 or w.height() < hint.height() - 1:
            problems.append(f"{name} is squeezed to {w.size()} (needs {hint})")
    return problems


def _clipped_plots(panel) -> list[str]:
    """pyqtgraph views whose scene layout needs more room than the view has (e.g. a title as
    wide as its text): the plot is drawn cut off, though no widget is too small."""
    import pyqtgraph as pg

    out = []
    for view in panel.findChildren(pg.GraphicsView):
        layout_item = getattr(view, "centralWidget", None)
        if not view.isVisibleTo(panel) or layout_item is None:
            continue
        need = layout_item.effectiveSizeHint(Qt.SizeHint.MinimumSize)
        have = view.viewport().size()
        if need.width() > have.width() + 1 or need.height() > have.height() + 1:
            out.append(f"{view.objectName() or type(view).__name__} needs {need.width():.0f}x"
                       f"{need.height():.0f}, has {have.width()}x{have.height()}")
    return out


def _settle(qtbot, window):
    for _ in range(3):
        QApplication.processEvents()
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=60_000)
    QApplication.processEvents()


def test_every_panel_fits_1366x768(qtbot, window, artifacts_dir):
    window.resize(1366, 768)
    run_prompt_and_wait(qtbot, window, PROMPT)
    attribution = _binding(window, "attributionDock").widget
    attribution.set_target(" Mary", " John")
    qtbot.mouseClick(attribution.run_button, Qt.MouseButton.LeftButton)
    window.docks["patchingDock"].raise_()
    _settle(qtbot, window)
    patching = _binding(window, "patchingDock").widget
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching"):
        qtbot.mouseClick(patching.run_button, Qt.MouseButton.LeftButton)
    patching.plan.add_items([{"component": "z", "layer": 1, "index": 1, "positions": []},
                             {"component": "mlp_out", "layer": 0, "index": -1, "positions": []}])
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching.plan"):
        qtbot.mouseClick(patching.plan.run_button, Qt.MouseButton.LeftButton)
    assert patching.plan.result is not None
    window.docks["inductionDock"].raise_()
    _settle(qtbot, window)
    induction = _binding(window, "inductionDock").widget
    qtbot.mouseClick(induction.scan_button, Qt.MouseButton.LeftButton)
    _settle(qtbot, window)
    assert window.size().width() == 1366 and window.size().height() == 768
    report = {}
    for name, dock in window.docks.items():
        dock.raise_()
        _settle(qtbot, window)
        scroll, panel = dock.findChild(PanelScrollArea), _binding(window, name).widget
        window.grab().save(str(artifacts_dir / f"fit_{name}.png"))
        assert not scroll.horizontalScrollBar().isVisible(), f"{name} scrolls sideways"
        assert not scroll.verticalScrollBar().isVisible(), f"{name} scrolls vertically"
        problems = _clipping_problems(scroll, panel) + _clipped_plots(panel)
        assert not problems, f"{name}: " + "; ".join(problems)
        plot = _plot(name, panel)
        report[name] = (plot.height(), panel.height())
        assert plot.isVisibleTo(panel)
        assert plot.height() >= 0.5 * panel.height(), f"{name}: plot {plot.height()} of " \
                                                      f"{panel.height()} px"
    assert report["patchingDock"][0] > 300, report


def test_induction_options_are_reachable_from_their_button(qtbot, window):
    window.resize(1366, 768)
    window.docks["inductionDock"].raise_()
    panel = _binding(window, "inductionDock").widget
    seen = []

    def look_and_close():
        seen.append((panel.options_menu.isVisible(), panel.measure.isVisible(),
                     panel.exclude_bos.isVisible(), panel.exclude_current.isVisible()))
        panel.options_menu.close()

    QTimer.singleShot(0, look_and_close)
    qtbot.mouseClick(panel.options_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(seen), timeout=5000)
    assert seen[0] == (True, True, True, True)
    panel.exclude_bos.setChecked(True)
    assert "no BOS" in panel.options_button.text()
