"""Drive the Layer attribution panel in the real window: targets, views, clicks, errors, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt

from tests.app.conftest import run_prompt_and_wait

IOI = "When John and Mary went to the store, John gave a drink to"


def binding_of(window):
    return next(b for b in window.bindings if b.object_name == "attributionDock")


def attribute(qtbot, window, answer: str, cf: str = "", position: int | None = None,
              expect_job: bool = True):
    """Type the target like a user and click Attribute; wait for the job if one starts."""
    panel = binding_of(window).widget
    window.docks["attributionDock"].raise_()
    panel.answer_edit.clear()
    qtbot.keyClicks(panel.answer_edit, answer)
    panel.cf_edit.clear()
    qtbot.keyClicks(panel.cf_edit, cf)
    if position is not None:
        panel.position_spin.setValue(position)
    if not expect_job:
        qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
        return panel
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "attribution"):
        qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
    return panel


def tl_numbers(model, prompt, answer, cf="", pos=-1):
    from transformer_lens.tools.analysis import direct_logit_attribution, logit_lens

    tokens = model.to_tokens(prompt)
    a = model.to_single_token(answer)
    c = model.to_single_token(cf) if cf else None
    with torch.no_grad():
        comp = direct_logit_attribution(model, tokens, a, c, unit="component", pos=pos)
        heads = direct_logit_attribution(model, tokens, a, c, unit="head", pos=pos)
        lens = logit_lens(model, tokens, incl_mid=True, positions=pos,
                          targets=[a] if c is None else [a, c])
    lv = lens.values[:, 0].numpy()
    return dict(comp=comp.attribution[:, 0].numpy(), comp_labels=comp.labels,
                heads=heads.attribution[:-1, 0].numpy(), head_labels=heads.labels[:-1],
                lens=lv[:, 0] - (lv[:, 1] if c is not None else 0),
                ranks=lens.readout.target_ranks[:, 0, 0].numpy(), lens_labels=lens.labels)


def test_views_show_transformer_lens_numbers(qtbot, window, tiny_host, artifacts_dir):
    run_prompt_and_wait(qtbot, window, IOI)
    panel = binding_of(window).widget
    assert "Type an answer token" in panel.message.text()  # no target yet: a hint, no job
    panel = attribute(qtbot, window, " Mary", " John")
    assert not panel.message.isVisible()
    ref = tl_numbers(tiny_host.model, IOI, " Mary", " John")
    # logit lens bars and table
    assert panel.lens_chart.labels == list(ref["lens_labels"])
    np.testing.assert_allclose(panel.lens_chart.values, ref["lens"], atol=1e-4)
    assert panel.lens_model.rowCount() == len(ref["lens_labels"])
    for row, rank in enumerate(ref["ranks"]):
        assert panel.lens_model.item(row, 2).text() == str(int(rank))
    assert panel.lens_model.item(row, 1).text() == f"{ref['lens'][-1]:+.3f}"
    # components
    assert panel.comp_chart.labels == list(ref["comp_labels"])
    np.testing.assert_allclose(panel.comp_chart.values, ref["comp"], atol=1e-4)
    # heads: the heat map rows are layers, the top list is sorted by |value|
    L, H = tiny_host.model.cfg.n_layers, tiny_host.model.cfg.n_heads
    np.testing.assert_allclose(panel.heatmap.values.reshape(-1), ref["heads"], atol=1e-4)
    assert panel.heatmap.values.shape == (L, H)
    top = np.abs(panel.top_heads.values)
    assert np.all(np.diff(top) <= 1e-7)
    assert top[0] == pytest.approx(np.abs(ref["heads"]).max(), abs=1e-5)
    assert panel.top_heads.labels[0] == ref["head_labels"][int(np.abs(ref["heads"]).argmax())]
    # the summary states the identity: model = components + b_U
    r = panel.result
    assert f"model {r.final_values[0]:+.3f}" in panel.summary.text()
    assert f"components {r.component_values[0].sum():+.3f}" in panel.summary.text()
    from PySide6.QtWidgets import QApplication

    QApplication.processEvents()  # let pyqtgraph lay out the new axes before the screenshot
    window.grab().save(str(artifacts_dir / "attribution_window.png"))
    panel.tabs.setCurrentIndex(2)
    QApplication.processEvents()
    panel.grab().save(str(artifacts_dir / "attribution_heads.png"))


def test_clicks_set_the_shared_selection_and_selection_highlights(qtbot, window):
    run_prompt_and_wait(qtbot, window, IOI)
    panel = attribute(qtbot, window, " Mary", " John")
    sel = window.controller.selection
    panel.tabs.setCurrentIndex(2)
    qtbot.waitUntil(lambda: panel.heatmap.isVisible())
    with qtbot.waitSignal(sel.head_selected, timeout=3000) as sig:
        qtbot.mouseClick(panel.heatmap.view.viewport(), Qt.MouseButton.LeftButton,
                         pos=panel.heatmap.cell_point(1, 2))
    assert sig.args == [1, 2]
    # the outline follows the selection
    xs, ys = panel.heatmap.outline.getData()
    assert (min(xs), max(xs), min(ys), max(ys)) == (2, 3, 1, 2)
    # the top-heads list: its first bar names a head
    label = panel.top_heads.labels[0]
    layer, head = (int(x) for x in label[1:].split("H"))
    if (layer, head) == (1, 2):
        sel.set_head(0, 0)
    with qtbot.waitSignal(sel.head_selected, timeout=3000) as sig:
        qtbot.mouseClick(panel.top_heads.plot_widget.viewport(), Qt.MouseButton.LeftButton,
                         pos=panel.top_heads.bar_point(0))
    assert sig.args == [layer, head]
    assert panel.top_heads.highlighted == 0
    # components: a layer's MLP selects the whole layer (head -1)
    panel.tabs.setCurrentIndex(1)
    qtbot.waitUntil(lambda: panel.comp_chart.isVisible())
    i = panel.comp_chart.labels.index("1_mlp_out")
    with qtbot.waitSignal(sel.head_selected, timeout=3000) as sig:
        qtbot.mouseClick(panel.comp_chart.plot_widget.viewport(), Qt.MouseButton.LeftButton,
                         pos=panel.comp_chart.bar_point(i))
    assert sig.args == [1, -1]
    # a logit-lens table row selects the layer that produced that stream entry
    panel.tabs.setCurrentIndex(0)
    qtbot.waitUntil(lambda: panel.lens_table.isVisible())
    row = panel.result.lens_labels.index("1_mid")
    rect = panel.lens_table.visualRect(panel.lens_model.index(row, 0))
    sel.set_head(0, 0)
    with qtbot.waitSignal(sel.head_selected, timeout=3000) as sig:
        qtbot.mouseClick(panel.lens_table.viewport(), Qt.MouseButton.LeftButton,
                         pos=rect.center())
    assert sig.args == [1, -1]
    # selection made elsewhere outlines the cell here
    sel.set_head(0, 3)
    xs, ys = panel.heatmap.outline.getData()
    assert (min(xs), max(xs), min(ys), max(ys)) == (3, 4, 0, 1)


def test_hover_shows_the_value(qtbot, window):
    run_prompt_and_wait(qtbot, window, IOI)
    panel = attribute(qtbot, window, " Mary")
    chart = panel.lens_chart
    panel.tabs.setCurrentIndex(0)
    qtbot.waitUntil(lambda: chart.isVisible())
    with qtbot.waitSignal(chart.sig_bar_hovered, timeout=3000,
                          check_params_cb=lambda i: i == 2):
        qtbot.mouseMove(chart.plot_widget.viewport(), chart.bar_point(2))
    assert chart.hover_line.text().startswith(f"{chart.labels[2]}: {chart.values[2]:+.4g}")
    assert chart.hover_item.isVisible()
    # the head heat map reports the cell under the mouse with its value
    heat = panel.heatmap
    panel.tabs.setCurrentIndex(2)
    qtbot.waitExposed(heat.view)
    qtbot.mouseMove(heat.view.viewport(), heat.cell_point(1, 3))
    expected = f"L1H3: {panel.result.head_values[0, 1, 3]:+.4g}"
    qtbot.waitUntil(lambda: heat.hover_line.text() == expected, timeout=3000)


def test_bad_input_shows_message_and_keeps_the_result(qtbot, window):
    run_prompt_and_wait(qtbot, window, IOI)
    panel = attribute(qtbot, window, " Mary", " John")
    before = panel.result
    values = panel.comp_chart.values.copy()
    cases = [(" Mary Poppins", "", None, "tokens for this model"),
             (" Mary", " Mary", None, "same token"),
             (" Mary", " John", 99, "out of range")]
    for answer, cf, pos, needle in cases:
        panel = attribute(qtbot, window, answer, cf, pos)
        assert panel.message.isVisible() and needle in panel.message.text(), panel.message.text()
        assert "#b00020" in panel.message.styleSheet()
        assert panel.result is before
        np.testing.assert_array_equal(panel.comp_chart.values, values)
        assert not window.errors.history
    panel.position_spin.setValue(-1)
    # an empty answer never reaches the worker
    panel = attribute(qtbot, window, "", "", expect_job=False)
    assert "empty" in panel.message.text() and not window.controller.busy
    assert panel.result is before
    # typed text survives the errors
    assert panel.answer_edit.text() == ""
    panel = attribute(qtbot, window, " John", " Mary")
    assert not panel.message.isVisible() and panel.result is not before
    assert panel.result.answers == (" John",)


def test_quick_targets_are_the_models_top_predictions(qtbot, window):
    window.docks["attributionDock"].raise_()
    run_prompt_and_wait(qtbot, window, IOI)
    panel = binding_of(window).widget
    pred = window.controller.last_prompt_result
    # the predictions' top tokens, minus byte fragments that cannot be typed back as one token
    top = [(j, t) for j, t in enumerate(pred.top_tokens[-1]) if "\ufffd" not in t]
    assert len(top) >= 2
    assert panel.quick_buttons[0].isVisible()
    assert panel.quick_buttons[0].text() == \
        f"{top[0][1].replace(' ', '·')} {float(pred.top_probs[-1, top[0][0]]):.0%}"
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "attribution"):
        qtbot.mouseClick(panel.quick_buttons[1], Qt.MouseButton.LeftButton)
    j, tok = top[1]
    assert panel.answer_edit.text() == tok
    assert not panel.message.isVisible(), panel.message.text()
    assert panel.result.answer_ids[0] == int(pred.top_ids[-1, j])
    # the final logit-lens entry is the model's own prediction: the j-th likeliest has rank j
    assert panel.result.lens_ranks[0, -1] == j
    # choosing a position elsewhere moves the targets there
    window.controller.selection.set_position(4)
    assert panel.position_spin.value() == 4
    first = next(t for t in pred.top_tokens[4] if "\ufffd" not in t)
    assert panel.quick_buttons[0].text().startswith(first.replace(" ", "·"))


def test_batch_shows_mean_and_per_prompt_spread(qtbot, window, tiny_host):
    window.docks["attributionDock"].raise_()
    run_prompt_and_wait(qtbot, window, IOI)
    panel = binding_of(window).widget
    panel.batch_check.setChecked(True)
    assert panel.batch_edit.isVisible()
    panel.batch_edit.setPlainText(
        f"{IOI} | Mary | John\n"
        "Alice and Bob walked to the park, and Alice gave a ball to | Bob | Alice\n"
        "When Mary and John went to the store, Mary gave a drink to | John | Mary\n")
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "attribution"):
        qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
    r = panel.result
    assert r.n_prompts == 3 and r.answers == (" Mary", " Bob", " John")
    rows = np.stack([tl_numbers(tiny_host.model, p, a, c)["comp"]
                     for p, a, c in zip(r.prompts, r.answers, r.counterfactuals, strict=True)])
    np.testing.assert_allclose(panel.comp_chart.values, rows.mean(0), atol=1e-4)
    np.testing.assert_allclose(panel.comp_chart.lower, rows.min(0), atol=1e-4)
    np.testing.assert_allclose(panel.comp_chart.upper, rows.max(0), atol=1e-4)
    assert panel.comp_chart.errors is not None
    assert len(panel.comp_chart.dots.data) == rows.size
    assert panel.prompt_combo.isVisible() and panel.prompt_combo.count() == 4
    panel.prompt_combo.setCurrentIndex(2)  # prompt 2 alone
    np.testing.assert_allclose(panel.comp_chart.values, rows[1], atol=1e-4)
    assert panel.comp_chart.errors is None
    # a malformed line is reported next to the input, nothing runs
    panel.batch_edit.setPlainText("a | b | c | d")
    qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
    assert "4 fields" in panel.message.text() and not window.controller.busy
    assert panel.result is r


def test_export_png_svg_csv(qtbot, window, tmp_path):
    from PySide6.QtGui import QImage

    run_prompt_and_wait(qtbot, window, IOI)
    panel = attribute(qtbot, window, " Mary", " John")
    binding = binding_of(window)
    panel.tabs.setCurrentIndex(1)
    qtbot.waitExposed(panel.comp_chart.plot_widget)
    binding.export("png", str(tmp_path / "c.png"))
    img = QImage(str(tmp_path / "c.png"))
    assert not img.isNull() and img.width() >= 1200
    binding.export("svg", str(tmp_path / "c.svg"))
    svg = (tmp_path / "c.svg").read_text()
    assert "<svg" in svg and "Direct logit attribution per component" in svg
    assert ">embed<" in svg.replace(" ", "")  # category labels are text in the SVG
    from tests.app.exported import read_export

    binding.export("csv", str(tmp_path / "c.csv"))
    about, header, body = read_export(tmp_path / "c.csv")
    assert about["model"] == window.controller.model_info.name
    assert about["prompt 1"] == panel.result.prompts[0] and "logits" in about["units"]
    rows = [header, *body]
    assert rows[0][:4] == ["label", "mean", "min", "max"]
    assert [r[0] for r in rows[1:]] == list(panel.result.component_labels)
    np.testing.assert_allclose([float(r[1]) for r in rows[1:]],
                               panel.result.component_values[0], rtol=1e-6)
    panel.tabs.setCurrentIndex(2)
    binding.export("csv", str(tmp_path / "h.csv"))
    about, header, body = read_export(tmp_path / "h.csv")
    rows = [header, *body]
    assert rows[1 + 5][0] == "L1H1"  # layer-major order
    assert float(rows[1 + 5][1]) == pytest.approx(float(panel.result.head_values[0, 1, 1]))
    binding.export("png", str(tmp_path / "h.png"))
    assert not QImage(str(tmp_path / "h.png")).isNull()


def test_session_state_round_trip_and_hostile_values(qtbot, window):
    binding = binding_of(window)
    panel = binding.widget
    panel.set_target(" Mary", " John", 3)
    panel.batch_check.setChecked(True)
    panel.batch_edit.setPlainText("x | y | z")
    panel.tabs.setCurrentIndex(2)
    state = binding.session_state()
    panel.set_target("", "", -1)
    panel.batch_check.setChecked(False)
    panel.batch_edit.clear()
    panel.tabs.setCurrentIndex(0)
    binding.restore_session_state(state)
    assert panel.target() == (" Mary", " John", 3)
    assert panel.batch_check.isChecked() and panel.batch_edit.toPlainText() == "x | y | z"
    assert panel.tabs.currentIndex() == 2
    binding.restore_session_state({"position": "not a number", "tab": 99, "answer": ["list"]})
    assert panel.target() == ("", "", -1) and panel.tabs.currentIndex() == 2
