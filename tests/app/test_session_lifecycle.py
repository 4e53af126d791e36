"""The session's life in the window: title and modified marker, the Save / Discard / Cancel
question before work is replaced, New, Open Recent, drag-and-drop, and the notes dock."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPoint, Qt, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QMessageBox

from app.session_io import load_session, save_session
from tests.app.conftest import run_prompt_and_wait

PROMPT = "When John and Mary went to the store"


def idle(qtbot, win, action, timeout: int = 60_000):
    """Run ``action`` and wait until every job it started has finished."""
    if win.controller.busy:
        qtbot.waitUntil(lambda: not win.controller.busy, timeout=timeout)
    result = action()
    if win.controller.busy:
        qtbot.waitUntil(lambda: not win.controller.busy, timeout=timeout)
    return result


def save_as(qtbot, win, monkeypatch, path: Path) -> None:
    """File > Save As… with the file dialog answering ``path``."""
    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *a, **k: (str(path), "")))
    win.action_save_as.trigger()
    assert path.is_file()


def write_session(win, path: Path, **manifest) -> None:
    """A session file on the window's own model (no load of another one)."""
    from dataclasses import asdict

    save_session(path, dict({"model": asdict(win.model_spec)}, **manifest))


def click_in_box(qtbot, button: QMessageBox.StandardButton, seen: list) -> None:
    """Click ``button`` of the modal box as soon as it is up (the box's exec() blocks)."""
    def attempt() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(10, attempt)
            return
        seen.append(box.text())
        qtbot.mouseClick(box.button(button), Qt.MouseButton.LeftButton)

    QTimer.singleShot(0, attempt)


def type_notes(qtbot, win, text: str) -> None:
    from app import notes_dock

    notes_dock.show(win)
    edit = win.notes.widget.edit
    edit.setFocus()
    for i, line in enumerate(text.split("\n")):  # keyClicks types no newline
        if i:
            qtbot.keyClick(edit, Qt.Key.Key_Return)
        qtbot.keyClicks(edit, line)


def test_title_names_the_session_and_marks_any_change(qtbot, window, tmp_path, monkeypatch):
    win = window
    run_prompt_and_wait(qtbot, win, PROMPT)
    assert win.windowTitle().startswith("Untitled[*] — Lensbench")
    path = tmp_path / "ioi study.lensbench"
    save_as(qtbot, win, monkeypatch, path)
    assert win.windowTitle() == "ioi study.lensbench[*] — Lensbench — " \
        + win.controller.model_info.name
    assert not win.isWindowModified()
    # the prompt: typed, then typed back to what the file holds (a comparison, not a flag)
    qtbot.keyClicks(win.prompt_editor.edit, "!")
    qtbot.waitUntil(win.isWindowModified, timeout=5000)
    qtbot.keyClick(win.prompt_editor.edit, Qt.Key.Key_Backspace)
    qtbot.waitUntil(lambda: not win.isWindowModified(), timeout=5000)
    # the selection
    win.controller.selection.set_head(1, 3)
    qtbot.waitUntil(win.isWindowModified, timeout=5000)
    win.controller.selection.set_head(0, 0)
    qtbot.waitUntil(lambda: not win.isWindowModified(), timeout=5000)
    # the notes
    type_notes(qtbot, win, "L1H3 looks like a name mover")
    qtbot.waitUntil(win.isWindowModified, timeout=5000)
    win.action_save.trigger()  # saves into the same file, no dialog
    assert not win.isWindowModified()
    notes = load_session(path)[0]["panels"]["notesDock"]
    assert notes["text"] == "L1H3 looks like a name mover"
    # a panel's own control (the attention panel's colour map)
    attention = next(b for b in win.bindings if b.object_name == "attentionDock").widget
    combo = attention.cmap_combo
    combo.setCurrentIndex((combo.currentIndex() + 1) % combo.count())
    qtbot.waitUntil(win.isWindowModified, timeout=5000)


def test_quitting_with_unsaved_work_asks_and_cancel_keeps_everything(qtbot, window, tmp_path,
                                                                    monkeypatch, unsaved_answer):
    import app.session_lifecycle as lifecycle

    monkeypatch.setattr(lifecycle, "ask_unsaved", unsaved_answer.real)  # the real box
    win = window
    path = tmp_path / "keep.lensbench"
    save_as(qtbot, win, monkeypatch, path)
    win.prompt_editor.edit.setPlainText("unsaved words")
    seen: list[str] = []
    click_in_box(qtbot, QMessageBox.StandardButton.Cancel, seen)
    assert not win.close()
    assert seen == ["Save the changes to keep.lensbench?"]
    assert win.isVisible() and win.prompt_editor.prompt() == "unsaved words"
    assert win.controller.thread.isRunning()  # nothing was shut down
    assert load_session(path)[0]["prompt"] != "unsaved words"
    # Save: written into its file, then the window closes
    click_in_box(qtbot, QMessageBox.StandardButton.Save, seen)
    assert win.close()
    assert len(seen) == 2 and not win.isVisible()
    assert load_session(path)[0]["prompt"] == "unsaved words"
    assert win.controller.thread.isFinished()


def test_discard_on_quit_leaves_the_file_alone(qtbot, window, tmp_path, monkeypatch,
                                               unsaved_answer):
    import app.session_lifecycle as lifecycle

    monkeypatch.setattr(lifecycle, "ask_unsaved", unsaved_answer.real)
    path = tmp_path / "old.lensbench"
    save_as(qtbot, window, monkeypatch, path)
    before = path.read_bytes()
    window.prompt_editor.edit.setPlainText("thrown away")
    click_in_box(qtbot, QMessageBox.StandardButton.Discard, [])
    assert window.close()
    assert path.read_bytes() == before


def test_opening_another_file_asks_first(qtbot, window, tmp_path, monkeypatch, unsaved_answer):
    from PySide6.QtWidgets import QFileDialog

    win = window
    other = tmp_path / "other.lensbench"
    write_session(win, other, prompt="the other session")
    monkeypatch.setattr(QFileDialog, "getOpenFileName",
                        staticmethod(lambda *a, **k: (str(other), "")))
    win.prompt_editor.edit.setPlainText("work in progress")
    type_notes(qtbot, win, "my notes")
    unsaved_answer.answers.append("cancel")
    win.action_open.trigger()
    assert unsaved_answer.asked == ["Untitled"]
    assert win.prompt_editor.prompt() == "work in progress" and win.session_path is None
    assert win.notes.widget.text() == "my notes"
    unsaved_answer.answers.append("discard")
    idle(qtbot, win, win.action_open.trigger)
    assert len(unsaved_answer.asked) == 2
    assert win.prompt_editor.prompt() == "the other session"
    assert win.session_path == str(other)
    assert win.notes.widget.text() == ""  # a session without notes has none
    assert win.windowTitle().startswith("other.lensbench[*]") and not win.isWindowModified()
    # unchanged work: nothing to ask
    idle(qtbot, win, win.action_open.trigger)
    assert len(unsaved_answer.asked) == 2


def test_a_file_that_cannot_be_opened_changes_nothing(qtbot, window, tmp_path):
    bad = tmp_path / "bad.lensbench"
    bad.write_bytes(b"\x80\x04 not a session")
    window.prompt_editor.edit.setPlainText("mine")
    type_notes(qtbot, window, "notes stay")
    assert not window.lifecycle.open_file(str(bad))
    assert window.prompt_editor.prompt() == "mine"
    assert window.notes.widget.text() == "notes stay"
    assert window.errors.box.isVisible()


def test_new_session_starts_over_after_asking(qtbot, window, unsaved_answer):
    from app.main import DEFAULT_PROMPT

    win = window
    win.controller.selection.set_head(1, 2)
    type_notes(qtbot, win, "scratch")
    unsaved_answer.answers.append("cancel")
    win.action_new.trigger()
    assert win.notes.widget.text() == "scratch"
    unsaved_answer.answers.append("discard")
    idle(qtbot, win, win.action_new.trigger)
    assert win.notes.widget.text() == ""
    assert (win.controller.selection.layer, win.controller.selection.head) == (0, 0)
    assert win.prompt_editor.prompt() == DEFAULT_PROMPT
    assert win.controller.last_prompt_result.prompt == DEFAULT_PROMPT
    assert win.session_path is None and not win.isWindowModified()
    assert win.windowTitle().startswith("Untitled[*]")


def test_open_recent_lists_greys_missing_and_clears(qtbot, window, tmp_path, monkeypatch):
    from app import recent_files

    recent_files.clear_recent()
    win = window
    first, second = tmp_path / "first.lensbench", tmp_path / "second.lensbench"
    win.prompt_editor.edit.setPlainText("first prompt")
    save_as(qtbot, win, monkeypatch, first)
    win.prompt_editor.edit.setPlainText("second prompt")
    save_as(qtbot, win, monkeypatch, second)
    win.recent_menu.aboutToShow.emit()
    items = [a for a in win.recent_menu.actions() if a.toolTip().endswith(".lensbench")]
    assert [Path(a.toolTip()).name for a in items] == ["second.lensbench", "first.lensbench"]
    assert all(a.isEnabled() for a in items)
    idle(qtbot, win, items[1].trigger)
    assert win.prompt_editor.prompt() == "first prompt" and win.session_path == str(first)
    second.unlink()
    win.recent_menu.aboutToShow.emit()
    items = {Path(a.toolTip()).name: a for a in win.recent_menu.actions()
             if a.toolTip().endswith(".lensbench")}
    assert not items["second.lensbench"].isEnabled()
    assert "(missing)" in items["second.lensbench"].text()
    assert items["first.lensbench"].isEnabled()  # opened last: first in the list now
    clear = next(a for a in win.recent_menu.actions() if a.text() == "&Clear list")
    clear.trigger()
    assert recent_files.recent_paths() == []
    win.recent_menu.aboutToShow.emit()
    assert not any(a.toolTip().endswith(".lensbench") for a in win.recent_menu.actions())


def test_recent_list_keeps_ten_and_ignores_junk_in_settings():
    from app import recent_files
    from app.layout_state import settings

    recent_files.clear_recent()
    for i in range(12):
        recent_files.add_recent(f"/tmp/s{i}.lensbench")
    paths = recent_files.recent_paths()
    assert len(paths) == 10 and paths[0] == "/tmp/s11.lensbench"
    settings().setValue(recent_files.KEY, 42)
    assert recent_files.recent_paths() == []
    recent_files.clear_recent()


def _drag(target, path: Path, kind):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    pos = QPoint(5, 5)
    if kind is QDropEvent:
        return QDropEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                          Qt.KeyboardModifier.NoModifier), mime
    return QDragEnterEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                           Qt.KeyboardModifier.NoModifier), mime


@pytest.mark.parametrize("onto", ["window", "prompt"])
def test_dropping_a_session_file_opens_it(qtbot, window, tmp_path, onto):
    win = window
    path = tmp_path / "dropped.lensbench"
    write_session(win, path, prompt="dropped prompt",
                  panels={"notesDock": {"text": "# Dropped\nnotes"}})
    target = win if onto == "window" else win.prompt_editor.edit.viewport()
    enter, _m1 = _drag(target, path, QDragEnterEvent)
    QApplication.sendEvent(target, enter)
    assert enter.isAccepted()
    drop, _m2 = _drag(target, path, QDropEvent)
    QApplication.sendEvent(target, drop)
    qtbot.waitUntil(lambda: win.session_path == str(path), timeout=10_000)
    assert win.prompt_editor.prompt() == "dropped prompt"  # not the file's name typed in
    assert win.notes.widget.text() == "# Dropped\nnotes" and win.notes_dock.isVisible()
    qtbot.waitUntil(lambda: not win.controller.busy, timeout=60_000)
    # anything but a session file is left to the widget under the mouse
    other = tmp_path / "notes.txt"
    other.write_text("x")
    enter, _m3 = _drag(win, other, QDragEnterEvent)
    QApplication.sendEvent(win, enter)
    assert not enter.isAccepted()


def test_notes_preview_save_restore_and_bound(qtbot, window, tmp_path, monkeypatch):
    from app.notes_dock import MAX_NOTES_CHARS

    win = window
    type_notes(qtbot, win, "# Finding\n\n**L1H3** copies names")
    panel = win.notes.widget
    qtbot.mouseClick(panel.toolbar.widgetForAction(panel.action_preview),
                     Qt.MouseButton.LeftButton)
    assert panel.is_preview() and panel.preview.isVisible()
    rendered = panel.preview.toPlainText()
    assert "Finding" in rendered and "#" not in rendered and "**" not in rendered
    path = tmp_path / "notes.lensbench"
    save_as(qtbot, win, monkeypatch, path)
    assert load_session(path)[0]["panels"]["notesDock"] == {
        "text": "# Finding\n\n**L1H3** copies names", "preview": True}
    # a hostile file: notes of the wrong type are ignored, oversized ones cut with a message
    huge = tmp_path / "huge.lensbench"
    write_session(win, huge, prompt="p", panels={
        "notesDock": {"text": "x" * (MAX_NOTES_CHARS + 50), "preview": "yes"}})
    idle(qtbot, win, lambda: win.lifecycle.open_file(str(huge), ask=False))
    assert len(panel.text()) == MAX_NOTES_CHARS and not panel.is_preview()
    assert "left out" in panel.message.text() and panel.message.isVisible()
    weird = tmp_path / "weird.lensbench"
    write_session(win, weird, prompt="p", panels={"notesDock": {"text": 5}})
    idle(qtbot, win, lambda: win.lifecycle.open_file(str(weird), ask=False))
    assert panel.text() == ""
    idle(qtbot, win, lambda: win.lifecycle.open_file(str(path), ask=False))
    assert panel.text() == "# Finding\n\n**L1H3** copies names" and panel.is_preview()


def test_notes_dock_fits_a_laptop_screen(qtbot, window, artifacts_dir):
    from app import notes_dock

    win = window
    win.resize(1366, 768)
    notes_dock.show(win)
    qtbot.waitUntil(lambda: win.notes_dock.isVisible(), timeout=5000)
    QApplication.processEvents()
    panel = win.notes.widget
    assert win.width() <= 1366 and win.height() <= 768
    assert panel.edit.isVisible()
    assert panel.edit.width() >= 150 and panel.edit.height() >= 100
    bar = panel.toolbar.widgetForAction(panel.action_preview)
    assert bar.isVisible() and panel.rect().contains(bar.geometry())
    win.grab().save(str(artifacts_dir / "notes_dock_1366x768.png"))


def test_typing_while_an_opened_session_loads_is_kept_as_a_change(qtbot, window, tmp_path):
    """The content is taken again once the opened session's runs finish (results fill in
    derived settings), but never over what the user typed meanwhile."""
    win = window
    path = tmp_path / "s.lensbench"
    write_session(win, path, prompt=PROMPT)
    assert win.lifecycle.open_file(str(path), ask=False)
    assert win.controller.busy  # its prompt runs
    qtbot.keyClicks(win.prompt_editor.edit, " typed")
    qtbot.waitUntil(lambda: not win.controller.busy, timeout=60_000)
    qtbot.waitUntil(win.isWindowModified, timeout=5000)
    assert win.lifecycle.is_modified()


def test_pairs_and_plan_edits_mark_the_session_and_undo_unmarks(qtbot, window, tmp_path,
                                                               monkeypatch):
    win = window
    save_as(qtbot, win, monkeypatch, tmp_path / "pp.lensbench")
    patching = next(b for b in win.bindings if b.object_name == "patchingDock").widget
    win.docks["patchingDock"].raise_()
    assert not win.isWindowModified()
    patching.plan.add_items([{"component": "head", "layer": 1, "index": 2, "positions": [],
                              "mode": "denoise"}])  # what a drop onto the plan does
    qtbot.waitUntil(win.isWindowModified, timeout=5000)
    patching.plan.undo_action.trigger()  # Edit > Undo plan change
    assert patching.plan.items == []
    qtbot.waitUntil(lambda: not win.isWindowModified(), timeout=5000)
    patching.set_pair(0, "Alice met Bob", "Alice met Carol", " Bob", " Carol")
    qtbot.waitUntil(win.isWindowModified, timeout=5000)
