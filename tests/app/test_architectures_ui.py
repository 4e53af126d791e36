"""The window on other architectures: only what a model has is offered, grouped keys and values
are labelled as key/value heads, the BOS policy is shown and can be toggled, results say how
they were computed, and an analysis a model cannot support says so instead of showing numbers."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from tests.tl_reference import BASE, PAIRS


@pytest.fixture()
def open_window(qtbot, family_host):
    """``open_window(family)``: a shown main window with that family's tiny model loaded."""
    from app.main_window import MainWindow
    from engine.model_sources import ModelSpec

    windows = []

    def make(family: str):
        folder = family_host(family).info.folder
        win = MainWindow(restore_layout=False)
        qtbot.addWidget(win)
        win.show()
        with qtbot.waitSignal(win.controller.busy_changed, timeout=60_000,
                              check_params_cb=lambda busy: busy is False):
            win.load_model(ModelSpec("folder", folder, "cpu"))
        qtbot.waitUntil(lambda: not win.controller.busy, timeout=60_000)
        windows.append(win)
        return win

    yield make
    for win in windows:
        win.close()
        assert win.controller.thread.isFinished()


def patching(win):
    return next(b for b in win.bindings if b.object_name == "patchingDock")


def set_pair(qtbot, win, pair) -> None:
    """Type a pair into the editor's first row; wait for its (debounced) token check."""
    with qtbot.waitSignal(win.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching.check"):
        patching(win).widget.set_pair(0, pair.clean, pair.corrupted, pair.answer,
                                      pair.counterfactual)


def run_sweep(qtbot, win, kind: str) -> None:
    panel = patching(win).widget
    win.docks["patchingDock"].raise_()
    panel.sweep_combo.setCurrentIndex(panel.sweep_combo.findData(kind))
    with qtbot.waitSignal(win.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching"):
        qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)


def test_grouped_keys_are_key_value_heads(qtbot, open_window, artifacts_dir):
    win = open_window("llama")  # 4 query heads share 2 key/value heads
    set_pair(qtbot, win, PAIRS["middle"][0])
    run_sweep(qtbot, win, "head_k")
    panel = patching(win).widget
    result = panel.result
    assert result.complete and result.values.shape == (3, 2) and result.axes[-1] == "kv_head"
    assert "key/value head" in panel.heatmap.plot.getAxis("bottom").labelText
    assert "KV head 1" in panel._tooltip(1.5, 0.5) and "H2–H3" in panel._tooltip(1.5, 0.5)
    assert "Computed by:" in panel.summary.text()
    # The palette lists keys and values per key/value head, not per query head.
    palette = panel.palette
    assert palette.find("L0 KV1 k") is not None and palette.find("L0H3 k") is None
    assert palette.find("L0H3 q") is not None
    panel.grab().save(str(artifacts_dir / "patching_gqa_kv_heads.png"))


@pytest.mark.parametrize("family,kind,why", [("gpt_neox", "resid_mid", "parallel"),
                                             ("opt", "head_pattern", "read-only")])
def test_sweeps_a_model_cannot_run_are_not_offered(qtbot, open_window, family, kind, why):
    win = open_window(family)
    panel = patching(win).widget
    box = panel.sweep_combo
    i = box.findData(kind)
    assert not box.model().item(i).isEnabled()
    assert why in box.itemData(i, Qt.ItemDataRole.ToolTipRole)
    assert box.model().item(box.findData("head_out")).isEnabled()
    component = "resid_mid" if kind == "resid_mid" else "pattern"
    names = [panel.palette.tree.topLevelItem(1).child(j).text(0)
             for j in range(panel.palette.tree.topLevelItem(1).childCount())]
    assert not any(n.endswith(component) for n in names)


def test_bos_follows_the_model_and_the_toggle_reaches_every_panel(qtbot, open_window):
    win = open_window("gpt_neox")  # Pythia-style: no BOS by default
    check = win.prompt_editor.bos
    assert not check.isChecked() and "default: off" in check.toolTip()
    win.prompt_editor.edit.setPlainText(BASE)
    with qtbot.waitSignal(win.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        qtbot.mouseClick(win.prompt_editor.run_button, Qt.MouseButton.LeftButton)
    tokens = win.controller.last_prompt_result.str_tokens
    assert tokens[0] == "When"
    qtbot.waitUntil(lambda: not win.controller.busy, timeout=60_000)
    check.click()  # a real click on the box: BOS on, every panel recomputes
    qtbot.waitUntil(lambda: not win.controller.busy and win.controller.last_prompt_result
                    is not None and win.controller.last_prompt_result.str_tokens[0] != "When",
                    timeout=60_000)
    assert check.isChecked() and check.text() == "BOS*"
    assert win.controller.prepend_bos is True
    bos = win.controller.last_prompt_result.str_tokens[0]
    attention = next(b for b in win.bindings if b.object_name == "attentionDock")
    win.docks["attentionDock"].raise_()
    qtbot.waitUntil(lambda: attention.widget._result is not None and
                    attention.widget._result.items[0].str_tokens[0] == bos, timeout=60_000)
    qtbot.waitUntil(lambda: not win.controller.busy, timeout=60_000)
    pairs = patching(win).widget._check
    assert pairs is not None and pairs.clean_tokens[0][0] == bos


def test_attribution_says_per_head_dla_is_undefined_on_post_norm_blocks(qtbot, open_window,
                                                                        artifacts_dir):
    win = open_window("gemma2")
    binding = next(b for b in win.bindings if b.object_name == "attributionDock")
    win.docks["attributionDock"].raise_()
    panel = binding.widget
    win.prompt_editor.edit.setPlainText(BASE)
    panel.answer_edit.setText(" Mary")
    panel.cf_edit.setText(" John")
    with qtbot.waitSignal(win.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "attribution"):
        qtbot.mouseClick(win.prompt_editor.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.result is not None, timeout=60_000)
    assert np.isnan(panel.result.head_values).all()
    assert "not defined" in panel.heatmap.plot.titleLabel.text
    text = panel.summary.text()
    assert "Per-head attribution is not defined" in text and "soft-caps" in text
    panel.grab().save(str(artifacts_dir / "attribution_gemma2.png"))
