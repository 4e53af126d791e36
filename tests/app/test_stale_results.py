"""No view shows a previous model's or prompt's result as current (issue 15, item 3)."""

from __future__ import annotations

import threading

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from tests.app.conftest import run_prompt_and_wait

PROMPT = "When John and Mary went to the store, John gave a drink to"
OTHER = "The cat sat on the mat. The cat sat on the"


def _panel(window, name):
    return next(b for b in window.bindings if b.object_name == name).widget


def test_loading_another_model_reruns_the_prompt_on_it(qtbot, window, artifacts_dir):
    from engine.model_sources import ModelSpec

    run_prompt_and_wait(qtbot, window, PROMPT)
    before = window.controller.last_prompt_result
    predictions = _panel(window, "predictionsDock")
    patching = _panel(window, "patchingDock")
    with qtbot.waitSignal(window.controller.job_done, timeout=60_000,
                          check_params_cb=lambda ch: ch == "patching"):
        qtbot.mouseClick(patching.run_button, Qt.MouseButton.LeftButton)
    assert patching.heatmap.image.image is not None
    with qtbot.waitSignal(window.controller.busy_changed, timeout=120_000,
                          check_params_cb=lambda busy: busy is False):
        window.load_model(ModelSpec("bundled", device="cpu"))  # what Ctrl+L's dialog does
    after = window.controller.last_prompt_result
    assert after is not None and after is not before
    host = window.controller._worker.host
    assert host.info.name == "lensbench-organism"
    ids = host.model.to_tokens(PROMPT)[0].tolist()
    assert after.token_ids.tolist() == ids  # the new model's tokenizer, the same prompt
    # The panel shows the new result, row for row, under the new title.
    assert predictions.model.rowCount() == len(ids)
    assert predictions.model.item(1, 1).text() == after.str_tokens[1].replace(" ", "·")
    assert "lensbench-organism" in window.windowTitle()
    # The old model's sweep is gone, not shown under the new model's name.
    assert patching.result is None and patching.heatmap.image.image is None
    assert "lensbench-organism is loaded" in patching.summary.text()
    window.grab().save(str(artifacts_dir / "stale_model_switch.png"))


def test_hover_readout_never_shows_an_earlier_prompts_value(qtbot, window):
    window.docks["attentionDock"].raise_()
    run_prompt_and_wait(qtbot, window, PROMPT)
    panel = _panel(window, "attentionDock")
    QApplication.processEvents()  # pending re-layouts, before computing where the cell is
    q, k = 5, 2
    qtbot.mouseMove(panel.focused.graphics.viewport(), panel.focused.data_to_widget(k + .5, q + .5))
    layer, head = panel.focused_head()
    qtbot.waitUntil(lambda: panel.focused.readout.text() == panel.describe(layer, head, q, k),
                    timeout=3000)
    old = panel.focused.readout.text()
    run_prompt_and_wait(qtbot, window, OTHER)  # the mouse has not moved
    now = panel.focused.readout.text()
    assert now != old
    assert now == panel.describe(layer, head, q, k)  # the value under the mouse, for OTHER
    assert "'·cat'" in now or "'·sat'" in now or "·the" in now or "'The'" in now


def test_cancelled_scan_does_not_say_scanning(qtbot, window):
    from engine.jobs import Cancelled

    dock = window.docks["inductionDock"]
    dock.raise_()
    panel = _panel(window, "inductionDock")
    release = threading.Event()

    def blocker(host, request, ctx):  # keeps the worker busy so the scan waits in the queue
        while not ctx.cancelled and not release.is_set():
            release.wait(0.01)
        raise Cancelled

    window.controller.submit("test", blocker, None)
    qtbot.mouseClick(panel.scan_button, Qt.MouseButton.LeftButton)
    assert "Scanning" in panel.summary.text()
    with qtbot.waitSignal(window.controller.busy_changed, timeout=30_000,
                          check_params_cb=lambda busy: busy is False):
        qtbot.mouseClick(window.status.cancel_button, Qt.MouseButton.LeftButton)
    release.set()
    assert "Scanning" not in panel.summary.text()
    assert "Cancelled" in panel.summary.text()
    assert panel.scan_button.isEnabled()


def test_hidden_scanner_marks_its_prompt_scores_stale_and_rescans_when_shown(qtbot, window):
    window.docks["inductionDock"].raise_()
    panel = _panel(window, "inductionDock")
    panel.seq_len.setValue(8)
    panel.batch.setValue(2)
    run_prompt_and_wait(qtbot, window, PROMPT)  # the visible scanner scores the prompt
    binding = next(b for b in window.bindings if b.object_name == "inductionDock")
    assert binding.result.prompt_str_tokens[-1] == " to"
    window.docks["attentionDock"].raise_()
    run_prompt_and_wait(qtbot, window, OTHER)
    assert binding.result.prompt_str_tokens[-1] == " to"  # not rescanned while hidden...
    assert "prompt changed" in panel.message.text()  # ...and it says so
    with qtbot.waitSignal(window.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        window.docks["inductionDock"].raise_()
    assert binding.result.prompt_str_tokens[-1] == " the"
    assert not panel.message.isVisible()
