"""Drive the real window offscreen: type, run, read predictions, cancel, hit the error paths."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from tests.app.conftest import run_prompt_and_wait

PROMPT = "When John and Mary went to the store, John gave a drink to"


def test_run_prompt_shows_predictions(qtbot, window, artifacts_dir):
    run_prompt_and_wait(qtbot, window, PROMPT)
    panel = window.bindings[0].widget
    result = window.controller.last_prompt_result
    n = len(result.str_tokens)
    assert panel.model.rowCount() == n
    assert panel.strip.count() == n
    # The table shows the same top-1 as the engine computed, with its probability.
    top1 = panel.model.item(n - 1, 3).text()
    assert top1.endswith(f"{float(result.top_probs[-1, 0]):.1%}")
    # Clicking a token in the strip selects that position everywhere.
    item = panel.strip.item(3)
    rect = panel.strip.visualItemRect(item)
    with qtbot.waitSignal(window.controller.selection.position_changed, timeout=2000) as sig:
        qtbot.mouseClick(panel.strip.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert sig.args == [3]
    assert panel.selected_position() == 3
    assert "(pos 3)" in panel.detail.text()
    assert "gpt2" in window.status.model_label.text() or "L×" in window.status.model_label.text()
    window.grab().save(str(artifacts_dir / "main_window.png"))


def test_empty_prompt_message_and_nothing_runs(qtbot, window):
    window.prompt_editor.edit.setPlainText("   ")
    qtbot.mouseClick(window.prompt_editor.run_button, Qt.MouseButton.LeftButton)
    assert window.prompt_editor.message.isVisible()
    assert "empty" in window.prompt_editor.message.text()
    assert not window.controller.busy


def test_too_long_prompt_offers_truncation(qtbot, window):
    long = "the cat sat on the mat. " * 40
    run_prompt_and_wait(qtbot, window, long)
    editor = window.prompt_editor
    assert editor.message.isVisible() and "context is 64 tokens" in editor.message.text()
    assert editor.truncate_button.isVisible()
    with qtbot.waitSignal(window.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        qtbot.mouseClick(editor.truncate_button, Qt.MouseButton.LeftButton)
    result = window.controller.last_prompt_result
    assert len(result.str_tokens) == 64 and result.truncated_from > 64
    assert "truncated from" in window.bindings[0].widget.summary.text()


def test_cancel_a_running_job(qtbot, window):
    """A job that waits for cancel: the Cancel button must end it and report cancelled."""
    from engine.jobs import Cancelled

    def slow(host, request, ctx):
        while True:  # cooperative: only a cancel ends it
            ctx.check_cancelled()
            ctx.progress(0.5, "working")
            import threading

            threading.Event().wait(0.01)
        raise Cancelled

    cancelled = []
    window.controller.submit("test", slow, None, on_cancel=lambda: cancelled.append(True))
    qtbot.waitUntil(lambda: window.status.cancel_button.isVisible(), timeout=5000)
    with qtbot.waitSignal(window.controller.busy_changed, timeout=5000,
                          check_params_cb=lambda busy: busy is False):
        qtbot.mouseClick(window.status.cancel_button, Qt.MouseButton.LeftButton)
    assert cancelled == [True]
    assert not window.status.progress.isVisible()


def test_error_in_job_is_shown_and_app_keeps_working(qtbot, window):
    def broken(host, request, ctx):
        raise ValueError("boom")

    with qtbot.waitSignal(window.controller.error, timeout=5000):
        window.controller.submit("test", broken, None)
    assert window.errors.box.isVisible()
    assert window.errors.box.text() == "boom"
    assert "ValueError" in window.errors.box.detailedText()
    run_prompt_and_wait(qtbot, window, PROMPT)  # still works afterwards
    assert window.controller.last_prompt_result is not None


def test_bad_model_folder_keeps_old_model(qtbot, window, tmp_path):
    from engine.model_sources import ModelSpec

    before = window.controller.model_info
    with qtbot.waitSignal(window.controller.error, timeout=10_000):
        window.load_model(ModelSpec("folder", str(tmp_path), "cpu"))
    assert "has no config.json" in window.errors.box.text()
    assert window.controller.model_info is before
    run_prompt_and_wait(qtbot, window, PROMPT)
    assert window.controller.last_prompt_result is not None


def test_closing_during_a_job_joins_the_thread(qtbot, tiny_gpt2_dir):
    from app.main_window import MainWindow
    from engine.model_sources import ModelSpec

    win = MainWindow(restore_layout=False)
    qtbot.addWidget(win)
    win.show()
    win.load_model(ModelSpec("folder", str(tiny_gpt2_dir), "cpu"))
    win.prompt_editor.edit.setPlainText(PROMPT)
    qtbot.mouseClick(win.prompt_editor.run_button, Qt.MouseButton.LeftButton)
    win.close()  # while loading / running
    assert win.controller.thread.isFinished()


def test_reset_layout_brings_docks_back(qtbot, window):
    dock = window.docks["predictionsDock"]
    dock.setFloating(True)
    dock.hide()
    window.action_reset_layout.trigger()
    assert dock.isVisible() and not dock.isFloating()


def test_linked_selection_signals():
    from app.selection import Selection

    s = Selection()
    seen = []
    s.head_selected.connect(lambda layer, head: seen.append((layer, head)))
    s.set_head(1, 2)
    s.set_head(1, 2)  # unchanged: no second signal
    s.set_head(0, 3)
    assert seen == [(1, 2), (0, 3)]
    assert s.to_dict()["head"] == 3


@pytest.mark.parametrize("n", [1])
def test_loss_colours_follow_loss(qtbot, window, n):
    run_prompt_and_wait(qtbot, window, PROMPT)
    result = window.controller.last_prompt_result
    panel = window.bindings[0].widget
    worst = int(np.argmax(result.loss_per_token)) + 1
    best = int(np.argmin(result.loss_per_token)) + 1
    dark = panel.strip.item(worst).background().color().lightness()
    light = panel.strip.item(best).background().color().lightness()
    assert dark < light


def test_cancel_during_load_keeps_the_old_model(qtbot, window, tmp_path):
    from engine.model_sources import ModelSpec
    from tests.model_fixtures import make_gpt2_folder

    other = make_gpt2_folder(tmp_path / "other", n_layer=3, n_head=2, n_embd=32, seed=1)
    before = window.controller.model_info
    window.load_model(ModelSpec("folder", str(other), "cpu"))
    with qtbot.waitSignal(window.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        qtbot.mouseClick(window.status.cancel_button, Qt.MouseButton.LeftButton)
    assert window.controller.model_info is before
    run_prompt_and_wait(qtbot, window, PROMPT)
    assert window.controller.last_prompt_result.top_probs.shape[0] > 0
    assert window.status.model_label.text() == before.summary()


def test_cancel_lands_inside_a_forward_pass_of_any_job(qtbot, window):
    """The worker checks Cancel as each block of the model starts, for every job: a Cancel that
    arrives during block 0 of one long forward pass stops it before block 1 runs, and no hook is
    left behind on the model."""
    ran = []

    def one_long_forward(host, request, ctx):
        blocks = host.model.blocks
        handles = [blocks[0].register_forward_hook(lambda *_: ctx.cancel()),  # the user clicks
                   blocks[1].register_forward_hook(lambda *_: ran.append(1))]
        try:
            host.model(host.model.to_tokens("a long prompt in one forward pass"))
        finally:
            for handle in handles:
                handle.remove()
        ran.append("end")
        return None

    cancelled = []
    with qtbot.waitSignal(window.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        window.controller.submit("test", one_long_forward, None,
                                 on_cancel=lambda: cancelled.append(True))
    assert cancelled == [True] and ran == []  # block 1 never ran, nor did the rest of the job
    model = window.controller._worker.host.model
    assert all(not block._forward_pre_hooks for block in model.blocks)
    run_prompt_and_wait(qtbot, window, "The model still works")
    assert window.controller.last_prompt_result.prompt == "The model still works"
