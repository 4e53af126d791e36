"""The Induction-heads panel in the real window: real clicks on the scan button, the score maps,
the threshold, the ablation, the custom pattern and the exports; numbers checked against the engine
and TransformerLens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from tests.app.conftest import run_prompt_and_wait

PROMPT = "The cat sat on the mat. The cat sat on the mat."


def _binding(window):
    return next(b for b in window.bindings if b.object_name == "inductionDock")


def _click(qtbot, button):
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def _scan(qtbot, window, button=None, timeout=60_000):
    panel = _binding(window).widget
    with qtbot.waitSignal(window.controller.busy_changed, timeout=timeout,
                          check_params_cb=lambda busy: busy is False):
        _click(qtbot, button or panel.scan_button)


@pytest.fixture()
def shown(qtbot, window):
    dock = window.docks["inductionDock"]
    dock.show()
    dock.raise_()
    window.resize(1500, 1000)
    panel = _binding(window).widget
    panel.seq_len.setValue(12)
    panel.batch.setValue(4)
    run_prompt_and_wait(qtbot, window, PROMPT)  # the visible panel scans with the prompt
    QApplication.processEvents()  # pending re-layouts of the docks, before any click position
    return panel


def test_scan_draws_engine_numbers(qtbot, window, shown, artifacts_dir):
    binding, panel = _binding(window), shown
    r = binding.result
    assert r is not None and r.seq_len == 12 and r.batch == 4 and r.n_forward_passes == 1
    assert r.prompt_token_ids.tolist() == \
        window.controller._worker.host.model.to_tokens(PROMPT)[0].tolist()
    # The mosaic shows the five maps side by side, one gap column between them.
    img = panel.heat.image.image
    H = r.n_heads
    assert img.shape == (r.n_layers, 5 * (H + 1) - 1)
    for b, key in enumerate(("induction", "previous", "duplicate", "current", "first")):
        np.testing.assert_array_equal(img[:, b * (H + 1): b * (H + 1) + H], r.repeated[key])
    assert np.isnan(img[:, H]).all()
    # The table lists every head, best induction score first.
    n = r.n_layers * H
    assert panel.table.rowCount() == n
    values = [float(panel.table.item(i, 2).text()) for i in range(n)]
    assert values == sorted(values, reverse=True)
    la, h = np.unravel_index(np.argmax(r.repeated["induction"]), r.repeated["induction"].shape)
    assert panel.table.item(0, 1).text() == f"L{la}H{h}"
    # The prompt source shows head_detector's scores on the prompt.
    panel.source.setCurrentIndex(1)
    img = panel.heat.image.image
    from transformer_lens.head_detector import detect_head

    ref = detect_head(window.controller._worker.host.model, PROMPT, "induction_head")
    np.testing.assert_allclose(img[:, :H], ref.numpy(), atol=1e-5)
    panel.source.setCurrentIndex(0)
    assert "in one forward pass" in panel.summary.text()
    # The loss plot: first copy and repeated copy.
    curves = panel.loss_plot.getPlotItem().listDataItems()
    assert len(curves) == 2
    np.testing.assert_allclose(curves[1].yData, r.loss_per_position[r.second_half_slice])
    window.grab().save(str(artifacts_dir / "induction_panel.png"))


def test_click_head_selects_it_and_keeps_the_attention_prompt(qtbot, window, shown):
    """A click selects the head everywhere; the attention panel keeps the user's prompt. The
    repeated sequence is added next to it only when asked for (button or double-click)."""
    binding, panel = _binding(window), shown
    selection = window.controller.selection
    attention = next(b for b in window.bindings if b.object_name == "attentionDock").widget
    prompt_ids = attention.item().token_ids.tolist()
    target = (1, 2) if (selection.layer, selection.head) != (1, 2) else (0, 3)
    H = binding.result.n_heads
    # Click in the "Previous token" block (the second), cell of the target head.
    pos = panel.heat.data_to_widget((H + 1) + target[1] + 0.5, target[0] + 0.5)
    seen = []
    window.controller.inspect_tokens.connect(lambda ids, label: seen.append(label))
    with qtbot.waitSignal(selection.head_selected, timeout=3000) as sig:
        qtbot.mouseClick(panel.heat.graphics.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert sig.args == list(target)
    QApplication.processEvents()
    assert seen == [] and not window.controller.busy
    # The selected head is outlined in every block; attention focuses it, on the same prompt.
    rect = panel.heat.overlay_rect("sel1")
    assert rect is not None and rect.contains((H + 1) + target[1] + 0.5, target[0] + 0.5)
    assert attention.item().token_ids.tolist() == prompt_ids
    assert attention.focused_head() == target
    # Asked for: the repeated sequence joins the batch, shown, and the prompt is still there.
    with qtbot.waitSignal(window.controller.busy_changed, timeout=30_000,
                          check_params_cb=lambda busy: busy is False):
        qtbot.mouseClick(panel.inspect_button, Qt.MouseButton.LeftButton)
    assert attention.item().token_ids.tolist() == binding.result.rep_tokens[0].tolist()
    assert attention.focused_head() == target
    labels = [attention.item_combo.itemData(i) for i in range(attention.item_combo.count())]
    assert labels == [PROMPT, "repeated random tokens"]
    attention.item_combo.setCurrentIndex(0)
    assert attention.item().token_ids.tolist() == prompt_ids


def test_table_click_and_hover(qtbot, window, shown):
    binding, panel = _binding(window), shown
    r = binding.result
    # Hover first: a head click makes the attention panel re-lay out the bottom dock area.
    qtbot.mouseMove(panel.heat.graphics.viewport(), panel.heat.data_to_widget(1.5, 0.5))
    expected = f"L0H1: Induction = {float(r.repeated['induction'][0, 1]):.3f}"
    qtbot.waitUntil(lambda: panel.heat.last_tooltip.startswith(expected), timeout=3000)
    assert panel.heat.readout.text() == panel.heat.last_tooltip
    item = panel.table.item(3, 1)
    layer, head = item.data(Qt.ItemDataRole.UserRole)
    rect = panel.table.visualItemRect(item)
    with qtbot.waitSignal(window.controller.selection.head_selected, timeout=3000) as sig:
        qtbot.mouseClick(panel.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert sig.args == [layer, head]
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=30_000)


def test_threshold_marks_heads_and_ablation_runs(qtbot, window, shown, artifacts_dir):
    binding, panel = _binding(window), shown
    r = binding.result
    scores = r.repeated["induction"]
    thr = float(np.sort(scores.reshape(-1))[-3])  # exactly three heads at or above it
    panel.threshold.setValue(int(np.floor(thr * 100)))
    t = panel.threshold_value()
    marked = panel.marked_heads()
    assert len(marked) == int((scores >= t).sum()) >= 3
    assert f"{len(marked)} heads" in panel.threshold_label.text()
    # Every block outlines its own heads at or above the threshold.
    n_marks = sum(1 for k in panel._marks if k.startswith("mark"))
    assert n_marks == sum(int((r.repeated[k] >= t).sum())
                          for k in ("induction", "previous", "duplicate", "current", "first"))
    panel.tabs.setCurrentIndex(1)
    with qtbot.waitSignal(window.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        _click(qtbot, panel.ablate_button)
    ab = binding.ablation
    assert ab is not None and set(ab.heads) == set(marked)
    assert all(len(c) == len(marked) for c in ab.control_heads) and len(ab.control_heads) == 3
    assert f"{ab.clean_halves[1]:.2f} → {ab.ablated_halves[1]:.2f}" in panel.ablate_summary.text()
    np.testing.assert_allclose(panel.ablate_bars.values[:2], [ab.clean_halves[1],
                                                             ab.ablated_halves[1]])
    assert len(panel.loss_plot.getPlotItem().listDataItems()) == 4
    window.grab().save(str(artifacts_dir / "induction_ablation.png"))
    # No head above a threshold of 1: a clear message, nothing runs.
    panel.threshold.setValue(100)
    if not panel.marked_heads():
        _click(qtbot, panel.ablate_button)
        assert panel.message.isVisible() and "threshold" in panel.message.text()
        assert not window.controller.busy


def test_custom_formula_and_painting(qtbot, window, shown):
    binding, panel = _binding(window), shown
    panel.tabs.setCurrentIndex(2)
    panel.preset.setCurrentIndex(1)  # same token as mine
    assert panel.formula.text() == "tok(k) == tok(q) and k != q"
    _scan(qtbot, window, panel.custom_button)
    r = binding.result
    # Same as the duplicate-token score on the prompt.
    np.testing.assert_allclose(r.custom_scores, r.prompt_scores["duplicate"], atol=1e-6)
    panel.source.setCurrentIndex(1)
    assert panel.heat.image.image.shape[1] == 6 * (r.n_heads + 1) - 1
    # The canvas shows the pattern; clicking a cell toggles it and switches to painting.
    n = len(r.prompt_token_ids)
    assert panel.painted.shape == (n, n)
    before = panel.painted.copy()
    viewport = panel.canvas.graphics.viewport()
    qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=panel.canvas.data_to_widget(1.5, 5.5))
    assert panel.painted[5, 1] == 1 - before[5, 1] and panel.use_painted.isChecked()
    # Cells above the diagonal cannot be painted.
    qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=panel.canvas.data_to_widget(6.5, 2.5))
    assert panel.painted[2, 6] == 0
    # Dragging down column 0 paints the value of the first cell (toggled) over the others.
    value = 1.0 - panel.painted[4, 0]
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=panel.canvas.data_to_widget(0.5, 4.5))
    for q in (5, 6, 7):
        qtbot.mouseMove(viewport, panel.canvas.data_to_widget(0.5, q + 0.5))
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton,
                       pos=panel.canvas.data_to_widget(0.5, 7.5))
    assert panel.painted[4:8, 0].tolist() == [value] * 4
    painted = panel.painted.copy()
    _scan(qtbot, window, panel.custom_button)
    from transformer_lens.head_detector import detect_head

    ref = detect_head(window.controller._worker.host.model, PROMPT, torch.from_numpy(painted))
    np.testing.assert_allclose(binding.result.custom_scores, ref.numpy(), atol=1e-5)
    # A bad formula: the message appears next to the inputs, not in an error box.
    panel.use_painted.setChecked(False)
    panel.formula.setText("tok(k) = 3")
    _scan(qtbot, window, panel.custom_button)
    assert panel.message.isVisible() and "not valid" in panel.message.text()
    assert window.errors.box is None or not window.errors.box.isVisible()


def test_too_long_sequence_message(qtbot, window, shown):
    panel = shown
    panel.seq_len.setValue(40)  # 81 tokens > the tiny model's 64
    _scan(qtbot, window)
    assert panel.message.isVisible()
    assert "context of 64 tokens" in panel.message.text() and "at most 31" in panel.message.text()
    assert "T ≤ 31" in panel.seq_len.toolTip()


def test_exports(qtbot, window, shown, tmp_path):
    binding, panel = _binding(window), shown
    r = binding.result
    path = binding.export("csv", str(tmp_path / "scores"))
    from tests.app.exported import read_export

    about, header, rows = read_export(path)
    data = np.array(rows, dtype=float)
    assert about["model"] == window.controller.model_info.name and "head_detector" in \
        about["units"]
    assert header[:2] == ["layer", "head"]
    assert data.shape == (r.n_layers * r.n_heads, len(header))
    col = header.index("repeated_induction")
    np.testing.assert_allclose(data[:, col], r.repeated["induction"].reshape(-1), atol=1e-6)
    col = header.index("prompt_previous")
    np.testing.assert_allclose(data[:, col], r.prompt_scores["previous"].reshape(-1), atol=1e-6)
    png = binding.export("png", str(tmp_path / "maps.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    svg = binding.export("svg", str(tmp_path / "maps.svg"))
    assert "<svg" in open(svg, encoding="utf-8").read(2000)
    # The buttons go through the dialog, which the binding owns.
    called = []
    binding.export_dialog = lambda kind: called.append(kind)
    panel.sig_export.disconnect()
    panel.sig_export.connect(binding.export_dialog)
    _click(qtbot, panel.export_buttons["csv"])
    assert called == ["csv"]


def test_new_model_clears_results(qtbot, window, shown):
    binding, panel = _binding(window), shown
    assert binding.result is not None
    with qtbot.waitSignal(window.controller.model_loaded, timeout=60_000):
        window.load_model(window.model_spec)
    assert binding.result is None and panel.table.rowCount() == 0


def test_session_state_round_trip(qtbot, window):
    binding = _binding(window)
    panel = binding.widget
    panel.seq_len.setValue(17)
    panel.pool.setCurrentIndex(panel.pool.findData("words"))
    panel.measure.setCurrentText("abs")
    panel.exclude_bos.setChecked(True)
    panel.threshold.setValue(42)
    panel.formula.setText("q - k == 5")
    state = binding.session_state()
    import json

    state = json.loads(json.dumps(state))  # sessions store it as JSON
    panel.seq_len.setValue(5)
    panel.pool.setCurrentIndex(0)
    panel.measure.setCurrentText("mul")
    panel.exclude_bos.setChecked(False)
    panel.threshold.setValue(10)
    panel.formula.setText("")
    binding.restore_session_state(state)
    assert (panel.seq_len.value(), panel.pool.currentData(), panel.measure.currentText(),
            panel.exclude_bos.isChecked(), panel.threshold.value(), panel.formula.text()) == \
        (17, "words", "abs", True, 42, "q - k == 5")
    binding.restore_session_state({"seq_len": "lots", "source": 3, "formula": None})  # ignored
    assert panel.seq_len.value() == 17


CLASSIC = "The cat sat on the mat. The cat"


@pytest.fixture()
def bundled_window(qtbot):
    """The main window on the bundled organism (real induction heads L1H1 and L3H1)."""
    from app.main_window import MainWindow
    from engine.model_sources import ModelSpec

    win = MainWindow(restore_layout=False)
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.controller.busy_changed, timeout=120_000,
                          check_params_cb=lambda busy: busy is False):
        win.load_model(ModelSpec("bundled", device="cpu"))
    win.docks["inductionDock"].raise_()
    panel = _binding(win).widget
    panel.seq_len.setValue(20)
    panel.batch.setValue(8)
    run_prompt_and_wait(qtbot, win, CLASSIC)  # the scanner is on screen: it scans
    yield win
    win.close()


def test_classic_prompt_says_how_high_a_score_can_be(qtbot, bundled_window, artifacts_dir):
    from transformer_lens.head_detector import get_induction_head_detection_pattern

    win = bundled_window
    binding = _binding(win)
    panel = binding.widget
    r = binding.result
    panel.source.setCurrentIndex(panel.source.findData("prompt"))
    panel.rank_by.setCurrentIndex(panel.rank_by.findData("induction"))
    tokens = win.controller._worker.host.model.to_tokens(CLASSIC).cpu()
    detection = get_induction_head_detection_pattern(tokens)
    rows = int((detection > 0).any(-1).sum())
    n = tokens.shape[-1]
    ceiling = rows / n  # "mul": a perfect head scores 1 on the rows with an earlier copy, 0 else
    assert 0 < ceiling < 0.3
    assert r.prompt_ceilings["induction"] == pytest.approx(ceiling)
    # No head beats the ceiling; the best real one gets close on this prompt.
    assert r.prompt_scores["induction"].max() <= ceiling + 1e-6
    assert panel.ceiling_note.isVisible()
    text = panel.ceiling_note.text()
    assert f"at most {ceiling:.2f}" in text and f"only {rows} of its {n} positions" in text
    assert "repeated random tokens" in text.lower()
    assert panel.threshold_label.text().endswith(": 0 heads")
    panel.grab().save(str(artifacts_dir / "induction_ceiling.png"))
    # On the repeated tokens there is no ceiling to explain.
    panel.source.setCurrentIndex(panel.source.findData("repeated"))
    assert not panel.ceiling_note.isVisible()


def test_ablation_uses_the_repeated_scores_whatever_the_maps_show(qtbot, bundled_window):
    win = bundled_window
    binding = _binding(win)
    panel = binding.widget
    panel.source.setCurrentIndex(panel.source.findData("prompt"))  # 0 heads marked here
    assert panel.marked_heads() == []
    expected = panel.marked_heads("repeated")
    assert (1, 1) in expected  # the organism's induction head
    panel.tabs.setCurrentIndex(1)
    assert "L1H1" in panel.ablate_heads_label.text()
    with qtbot.waitSignal(win.controller.busy_changed, timeout=120_000,
                          check_params_cb=lambda busy: busy is False):
        qtbot.mouseClick(panel.ablate_button, Qt.MouseButton.LeftButton)
    assert binding.ablation is not None
    assert [tuple(h) for h in binding.ablation.heads] == expected
    assert binding.ablation.ablated_halves[1] > binding.ablation.clean_halves[1] + 1.0
