"""GUI fixtures: a real MainWindow on the tiny random GPT-2, with the worker thread joined after."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def unsaved_answer(monkeypatch):
    """A test never blocks on the "Save changes?" box: it answers Discard (closing a test's
    window must not wait for a click) and records each question. Tests of the question itself
    set ``answers`` or put back ``app.session_lifecycle.ask_unsaved`` and click the real box."""
    import app.session_lifecycle as lifecycle

    asked: list[str] = []
    answers: list[str] = []

    def ask(window) -> str:
        asked.append(window.lifecycle.display_name())
        return answers.pop(0) if answers else "discard"

    ask.asked, ask.answers, ask.real = asked, answers, lifecycle.ask_unsaved
    monkeypatch.setattr(lifecycle, "ask_unsaved", ask)
    return ask


@pytest.fixture()
def window(qtbot, tiny_gpt2_dir):
    """A shown main window with the tiny model loaded. Closing it must join the worker thread."""
    from app.main_window import MainWindow
    from engine.model_sources import ModelSpec

    win = MainWindow(restore_layout=False)
    qtbot.addWidget(win)
    win.show()
    # Wait until idle, not just loaded: panels may start their own jobs for the new model.
    with qtbot.waitSignal(win.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        win.load_model(ModelSpec("folder", str(tiny_gpt2_dir), "cpu"))
    assert win.controller.model_info is not None
    yield win
    win.close()
    assert win.controller.thread.isFinished(), "the worker thread leaked"


def run_prompt_and_wait(qtbot, win, prompt: str, timeout: int = 60_000) -> None:
    """Type ``prompt`` and click Run like a user; wait until every job has finished."""
    from PySide6.QtCore import Qt

    win.prompt_editor.edit.setPlainText(prompt)
    with qtbot.waitSignal(win.controller.busy_changed, timeout=timeout,
                          check_params_cb=lambda busy: busy is False):
        qtbot.mouseClick(win.prompt_editor.run_button, Qt.MouseButton.LeftButton)
