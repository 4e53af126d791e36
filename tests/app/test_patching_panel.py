"""The patching editor in the real window: pairs, alignment, a streamed sweep, clicks, cancel."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt

from engine.patching import PromptPair, SweepRequest, run_sweep

CLEAN = "When John and Mary went to the store, John gave a drink to"
CORRUPT = "When John and Mary went to the store, Mary gave a drink to"


def binding(window):
    return next(b for b in window.bindings if b.object_name == "patchingDock")


def wait_idle(qtbot, window, timeout=60_000):
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=timeout)


def run_panel_sweep(qtbot, window, panel, kind: str) -> None:
    """Pick ``kind`` in the sweep box, click Run sweep and wait until the job is done."""
    panel.sweep_combo.setCurrentIndex(panel.sweep_combo.findData(kind))
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching"):
        qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)


def test_sweep_streams_into_heatmap_and_click_selects(qtbot, window, artifacts_dir):
    b = binding(window)
    panel = b.widget
    window.docks["patchingDock"].raise_()
    wait_idle(qtbot, window)
    assert panel._check is not None and not panel._check.message
    # The alignment shows both prompts, and position 9 (" John" vs " Mary") is the differing one.
    diff = panel._check.differing[0]
    assert len(diff) == 1
    pos = diff[0]
    assert panel.alignment.item(0, pos).text() != panel.alignment.item(1, pos).text()
    assert panel.alignment.item(0, pos).background().color().name() != \
        panel.alignment.item(0, 0).background().color().name()
    # The panel's progress bar shows while the sweep runs, then gives its room to the heatmap.
    assert panel.progress.isHidden()
    shown_while_running = []
    window.controller.job_progress.connect(
        lambda ch, f, m: shown_while_running.append(not panel.progress.isHidden()))
    run_panel_sweep(qtbot, window, panel, "head_out")
    assert shown_while_running and all(shown_while_running)
    assert panel.progress.isHidden()
    result = panel.result
    assert result is not None and result.complete
    # Same numbers as the engine computes on the window's own model (run through the worker).
    got = []
    window.controller.submit("test", run_sweep, SweepRequest(
        (PromptPair(CLEAN, CORRUPT, " Mary", " John"),), "head_out"), on_result=got.append)
    qtbot.waitUntil(lambda: bool(got), timeout=60_000)
    np.testing.assert_allclose(result.values, got[0].values, atol=1e-6)
    assert np.ptp(result.values) > 1e-3
    # The heatmap shows exactly the result (layers x heads).
    shown = panel.heatmap.image.image
    np.testing.assert_allclose(shown, result.values, atol=1e-6)
    # Clicking cell (layer 1, head 2) selects that head everywhere.
    point = panel.heatmap.data_to_widget(2.5, 1.5)
    with qtbot.waitSignal(window.controller.selection.head_selected, timeout=3000) as sig:
        qtbot.mouseClick(panel.heatmap.graphics.viewport(), Qt.MouseButton.LeftButton,
                         pos=point)
    assert sig.args == [1, 2]
    panel.grab().save(str(artifacts_dir / "patching_panel.png"))


def test_mismatched_lengths_refuse_the_run(qtbot, window):
    b = binding(window)
    panel = b.widget
    wait_idle(qtbot, window)
    panel.set_pair(0, "When John and Mary went to the store", "When Alexander went to the store")
    qtbot.waitUntil(lambda: panel._check is not None and bool(panel._check.message),
                    timeout=10_000)
    assert panel.message.isVisible()
    assert "extra token" in panel.message.text()
    assert not panel.run_button.isEnabled()
    # the offending columns are red in the alignment
    n_clean = len(panel._check.clean_tokens[0])
    n_corr = len(panel._check.corrupted_tokens[0])
    assert panel.alignment.columnCount() == max(n_clean, n_corr)
    last = panel.alignment.item(0, panel.alignment.columnCount() - 1)
    assert last.background().color().red() > 200


def test_multi_token_answer_message(qtbot, window):
    panel = binding(window).widget
    wait_idle(qtbot, window)
    panel.set_pair(0, CLEAN, CORRUPT, " Maryqqq", " John")
    qtbot.waitUntil(lambda: panel._check is not None and "tokens for this model"
                    in panel._check.message, timeout=10_000)
    assert panel.message.isVisible() and not panel.run_button.isEnabled()


def test_cancel_mid_sweep_keeps_partial_cells(qtbot, window):
    b = binding(window)
    panel = b.widget
    wait_idle(qtbot, window)
    # Prompts that differ at their first word, so every cell needs a patched run (cells before
    # the first difference cost nothing), and one cell per chunk: something to cancel mid-way.
    tail = " went to the store and then to the park, and after that to the lake. Later, {} gave" \
           " a drink to"
    panel.set_pair(0, "John and Mary" + tail.format("John"), "Mary and John" + tail.format("John"),
                   " Mary", " John")
    qtbot.waitUntil(lambda: panel._check is not None and panel._check.differing[0][:1] == (1,)
                    and panel.run_button.isEnabled(), timeout=10_000)
    panel.sweep_combo.setCurrentIndex(panel.sweep_combo.findData("head_out_by_pos"))
    partials = []
    window.controller.job_progress.connect(lambda ch, f, m: partials.append(f))
    b.max_tokens_per_chunk = 15
    qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.result is not None and panel.result.done > 0, timeout=60_000)
    with qtbot.waitSignal(window.controller.job_done, timeout=1000,
                          check_params_cb=lambda ch: ch == "patching"):
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    assert "cancelled" in panel.progress.format() and not panel.progress.isHidden()
    kept = panel.result
    assert not kept.complete and 0 < kept.done < kept.total
    assert np.isfinite(kept.values).sum() == kept.done
    assert panel.run_button.isEnabled()


# -- the patch plan: drag and drop -------------------------------------------------------------------
def drop_on(widget, mime, pos=None):
    """Deliver a real drag-enter / drag-move / drop sequence to ``widget`` (the plan list's
    viewport), carrying ``mime`` exactly as QDrag would. QDrag.exec() runs its own blocking event
    loop that offscreen test platforms cannot drive with synthetic mouse events, so the test builds
    the same QMimeData the drag source produces (the palette's own ``mimeData``) and sends the
    drop events Qt would send; the plan's real drop handling does the rest."""
    from PySide6.QtCore import QPoint, QPointF
    from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
    from PySide6.QtWidgets import QApplication

    pos = pos or QPoint(10, 10)
    copy = Qt.DropAction.CopyAction
    enter = QDragEnterEvent(pos, copy, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted(), "the plan refused the drag"
    move = QDragMoveEvent(pos, copy, mime, Qt.MouseButton.LeftButton,
                          Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, move)
    drop = QDropEvent(QPointF(pos), copy, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)
    return drop.isAccepted()


def test_drag_palette_heads_onto_plan_and_run(qtbot, window, artifacts_dir):
    b = binding(window)
    panel = b.widget
    window.docks["patchingDock"].raise_()
    wait_idle(qtbot, window)
    view = panel.plan
    # Empty plan: a clear message, nothing runs.
    qtbot.mouseClick(view.run_button, Qt.MouseButton.LeftButton)
    assert "plan is empty" in view.message.text() and not window.controller.busy
    # Drag "L1H2" (its output z) from the palette, all positions.
    item = panel.palette.find("L1H2")
    assert item is not None
    mime = panel.palette.tree.mimeData([item])
    assert drop_on(view.list.viewport(), mime)
    assert view.items == [{"component": "z", "layer": 1, "index": 2, "positions": [],
                           "mode": "denoise"}]
    assert view.list.count() == 1 and "L1H2 z" in view.list.item(0).text()
    # A second drag: L0 attn_out at positions 10 and 14, dropped onto the first row -> inserted
    # before it.
    panel.palette.positions.setText("10, 14")
    mime = panel.palette.tree.mimeData([panel.palette.find("L0 attn_out")])
    first_row = view.list.visualItemRect(view.list.item(0)).center()
    assert drop_on(view.list.viewport(), mime, first_row)
    assert [d["component"] for d in view.items] == ["attn_out", "z"]
    assert view.items[0]["positions"] == [10, 14]
    # Undo removes the second drop; redo brings it back (QUndoStack).
    qtbot.mouseClick(view.undo_button, Qt.MouseButton.LeftButton)
    assert [d["component"] for d in view.items] == ["z"]
    qtbot.mouseClick(view.redo_button, Qt.MouseButton.LeftButton)
    assert [d["component"] for d in view.items] == ["attn_out", "z"]
    # Reorder: move the selected first item down.
    view.list.setCurrentRow(0)
    qtbot.mouseClick(view.down_button, Qt.MouseButton.LeftButton)
    assert [d["component"] for d in view.items] == ["z", "attn_out"]
    # Run the plan: together + each alone.
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching.plan"):
        qtbot.mouseClick(view.run_button, Qt.MouseButton.LeftButton)
    res = view.result
    assert res is not None and len(res.values) == 3
    # The head alone must equal the head sweep's cell (1, 2): an independent code path
    # (TransformerLens-checked in tests/engine).
    run_panel_sweep(qtbot, window, panel, "head_out")
    assert abs(res.values[1] - panel.result.values[1, 2]) < 1e-5
    assert view.chart.labels[0] == "all together" and len(view.chart.labels) == 3
    # A heatmap cell dragged onto the plan: the same payload the cell's QDrag carries.
    from widgets.component_palette import component_mime

    cell = panel.cell_plan_item(0, 3)
    assert cell == {"component": "z", "layer": 0, "index": 3, "positions": []}
    from PySide6.QtCore import QPoint

    below = QPoint(10, view.list.viewport().height() - 3)  # under the last row: appended
    assert drop_on(view.list.viewport(), component_mime([cell]), below)
    assert view.items[-1]["layer"] == 0 and view.items[-1]["index"] == 3
    panel.grab().save(str(artifacts_dir / "patching_plan.png"))


def test_plan_items_out_of_range_after_loading_a_smaller_model(qtbot, window, tmp_path):
    from engine.model_sources import ModelSpec
    from tests.model_fixtures import make_gpt2_folder

    b = binding(window)
    view = b.widget.plan
    wait_idle(qtbot, window)
    view.add_items([{"component": "z", "layer": 1, "index": 3, "positions": []},
                    {"component": "z", "layer": 0, "index": 1, "positions": []}])
    small = make_gpt2_folder(tmp_path / "small", n_layer=1, n_head=2, n_embd=32, seed=1)
    with qtbot.waitSignal(window.controller.model_loaded, timeout=60_000):
        window.load_model(ModelSpec("folder", str(small), "cpu"))
    assert "Item 1" in view.message.text() and "1 layers" in view.message.text()
    assert "Item 2" not in view.message.text()
    assert len(view.items) == 2  # nothing lost: the items stay, marked
    assert view.list.item(0).background().color().red() == 255
    wait_idle(qtbot, window)
    qtbot.mouseClick(view.run_button, Qt.MouseButton.LeftButton)
    assert not window.controller.busy  # refused before any job
    assert "Item 1" in view.message.text()
    view.list.setCurrentRow(0)
    qtbot.mouseClick(view.remove_button, Qt.MouseButton.LeftButton)
    assert len(view.items) == 1


def test_attribution_estimate_beside_exact_and_verify_top_k(qtbot, window):
    b = binding(window)
    panel = b.widget
    wait_idle(qtbot, window)
    panel.sweep_combo.setCurrentIndex(panel.sweep_combo.findData("head_out"))
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching.estimate"):
        qtbot.mouseClick(panel.estimate_button, Qt.MouseButton.LeftButton)
    est = panel.estimate
    assert est is not None and est.values.shape == (2, 4) and np.isfinite(est.values).all()
    assert panel.view_combo.currentData() == "estimate"
    np.testing.assert_allclose(panel.heatmap.image.image, est.values, atol=1e-6)
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching"):
        qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
    exact = panel.exact
    r = np.corrcoef(est.values.ravel(), exact.values.ravel())[0, 1]
    assert f"r = {r:.3f}" in panel.summary.text()
    panel.top_k.setValue(3)
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching"):
        qtbot.mouseClick(panel.verify_button, Qt.MouseButton.LeftButton)
    verified = panel.exact
    top = np.argsort(-np.abs(est.values.ravel()))[:3]
    assert np.isfinite(verified.values).sum() == 3
    # Same numbers; other batch compositions round differently in float32 (1e-4 is the spec).
    np.testing.assert_allclose(verified.values.ravel()[top], exact.values.ravel()[top], atol=1e-5)


def test_path_patching_from_a_clicked_head(qtbot, window):
    panel = binding(window).widget
    wait_idle(qtbot, window)
    run_panel_sweep(qtbot, window, panel, "head_out")
    qtbot.mouseClick(panel.heatmap.graphics.viewport(), Qt.MouseButton.LeftButton,
                     pos=panel.heatmap.data_to_widget(1.5, 0.5))
    assert panel.senders == [(0, 1)] and "L0H1" in panel.path_button.text()
    # Ctrl+click adds a second sender, in the same layer.
    qtbot.mouseClick(panel.heatmap.graphics.viewport(), Qt.MouseButton.LeftButton,
                     Qt.KeyboardModifier.ControlModifier,
                     pos=panel.heatmap.data_to_widget(3.5, 0.5))
    assert panel.senders == [(0, 1), (0, 3)] and "L0H1 + L0H3" in panel.path_button.text()
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching.path"):
        qtbot.mouseClick(panel.path_button, Qt.MouseButton.LeftButton)
    values = panel.path.values
    assert np.isnan(values[0]).all() and np.isfinite(values[1]).all()
    # The heatmap shows the engine's numbers for these two senders.
    from engine.jobs import Context
    from engine.path_patching import PathPatchRequest, run_path_patching

    ref = run_path_patching(window.controller._worker.host,
                            PathPatchRequest(binding(window).prompt_pairs(), ((0, 1), (0, 3)), "q"),
                            Context())
    np.testing.assert_allclose(values[1:], ref.receivers[1:], atol=1e-6)
    assert "L0H1 + L0H3" in panel.summary.text()
    assert panel.view_combo.currentData() == "path"
    assert "logits directly" in panel.summary.text()


def test_session_state_round_trip(qtbot, window):
    b = binding(window)
    panel = b.widget
    panel.set_pair(1, "A b c", "A d c", " x", " y")
    panel.plan.add_items([{"component": "mlp_out", "layer": 1, "index": -1, "positions": [2]}])
    state = b.session_state()
    assert state["pairs"][1] == ["A b c", "A d c", " x", " y"]
    panel.plan.set_items([])
    panel.set_pair(1, "changed", "changed")
    b.restore_session_state(state)
    assert panel.pairs()[1] == ("A b c", "A d c", " x", " y")
    assert panel.plan.items == [{"component": "mlp_out", "layer": 1, "index": -1,
                                 "positions": [2], "mode": "denoise"}]


def test_drag_head_from_attention_grid_onto_plan(qtbot, window, monkeypatch):
    """Press + move on the attention grid's L1 H3 tile starts a drag carrying that head's output;
    dropped on the plan it becomes a plan item whose run equals the head sweep's cell."""
    from tests.app.conftest import run_prompt_and_wait

    attn_dock = window.docks["attentionDock"]
    attn_dock.show()
    attn_dock.raise_()
    window.resize(1500, 1000)
    run_prompt_and_wait(qtbot, window, CLEAN)
    attention = next(b for b in window.bindings if b.object_name == "attentionDock").widget
    grid = attention.grid
    dragged = []
    # QDrag.exec() runs a nested platform loop offscreen tests cannot drive: capture its payload.
    monkeypatch.setattr(grid, "start_drag", dragged.append)
    start = attention.tile_center(1, 3)
    viewport = grid.graphics.viewport()
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=start)
    from PySide6.QtCore import QPoint
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    end = start + QPoint(30, 0)
    move = QMouseEvent(QMouseEvent.Type.MouseMove, end, viewport.mapToGlobal(end),
                       Qt.MouseButton.NoButton, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(viewport, move)
    assert len(dragged) == 1, "pressing and moving on a head tile did not start a drag"
    # The drag started from where the press was, not where the mouse moved to (L1 H3).
    window.docks["patchingDock"].show()
    window.docks["patchingDock"].raise_()
    panel = binding(window).widget
    view = panel.plan
    wait_idle(qtbot, window)
    assert drop_on(view.list.viewport(), dragged[0])
    assert view.items == [{"component": "z", "layer": 1, "index": 3, "positions": [],
                           "mode": "denoise"}]
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching.plan"):
        qtbot.mouseClick(view.run_button, Qt.MouseButton.LeftButton)
    alone = view.result.values[-1]
    run_panel_sweep(qtbot, window, panel, "head_out")
    assert abs(alone - panel.result.values[1, 3]) < 1e-5
    # A press on the grid's margin (no head there) starts nothing.
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=end)
    assert attention.head_mime(-1, 0) is None and attention.head_mime(0, 99) is None


def test_pattern_by_position_sweep_cells_map_to_plan_items(qtbot, window):
    """The layer × head × destination-position pattern sweep: rows are (layer, head), columns
    positions, and a cell's plan item patches that head's pattern row at that position."""
    panel = binding(window).widget
    wait_idle(qtbot, window)
    run_panel_sweep(qtbot, window, panel, "head_pattern_by_pos")
    res = panel.result
    n_layers, n_heads, n_pos = res.values.shape
    assert res.axes == ("layer", "head", "pos")
    image = panel.heatmap.image.image
    assert image.shape == (n_layers * n_heads, n_pos)
    np.testing.assert_allclose(image[1 * n_heads + 2], res.values[1, 2], equal_nan=True)
    item = panel.cell_plan_item(1 * n_heads + 2, n_pos - 1)
    assert item == {"component": "pattern", "layer": 1, "index": 2, "positions": [n_pos - 1]}
    assert np.isfinite(res.values).all() and np.ptp(res.values) > 0
