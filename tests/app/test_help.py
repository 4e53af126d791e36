"""Help menu, keyboard shortcuts, initial focus and leading-space warnings (issue 15, item 8)."""

from __future__ import annotations

from importlib import metadata

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices

from tests.app.conftest import run_prompt_and_wait


def _binding(window, name):
    return next(b for b in window.bindings if b.object_name == name)


def _menu(window, title):
    for action in window.menuBar().actions():
        if action.text().replace("&", "") == title:
            return action.menu()
    raise AssertionError(f"no {title} menu")


def test_about_names_versions_and_the_device(qtbot, window):
    help_menu = _menu(window, "Help")
    texts = [a.text().replace("&", "") for a in help_menu.actions() if a.text()]
    assert "About Lensbench" in texts and "Keyboard shortcuts" in texts
    window.action_about.trigger()
    box = window.about_box
    assert box.isVisible()
    text = box.text()
    for dist in ("torch", "transformer-lens"):
        assert metadata.version(dist) in text
    assert "Lensbench" in text and "0.1.0" in text
    info = window.controller.model_info
    assert f"{info.name} on cpu (float32)" in text


def test_shortcut_list_and_docs(qtbot, window, monkeypatch):
    window.action_shortcuts.trigger()
    table = window.shortcuts_dialog.table
    rows = {(table.item(r, 0).text(), table.item(r, 1).text()) for r in range(table.rowCount())}
    assert ("Ctrl+L", "Load model") in rows
    assert any(keys == "Ctrl+Z" and "plan" in what for keys, what in rows)
    assert ("Ctrl+Enter", "Run the prompt (in the prompt box)") in rows
    assert any(keys == "Esc" for keys, _ in rows)
    opened: list[QUrl] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url) or True)
    window.action_readme.trigger()
    assert opened and opened[0].toLocalFile().endswith("README.md")


def test_prompt_has_the_focus_at_start(qtbot, window):
    assert window.focusWidget() is window.prompt_editor.edit


def test_ctrl_z_and_ctrl_shift_z_undo_and_redo_the_plan(qtbot, window):
    window.docks["patchingDock"].raise_()
    plan = _binding(window, "patchingDock").widget.plan
    plan.add_items([{"component": "z", "layer": 1, "index": 2, "positions": []}])
    plan.add_items([{"component": "mlp_out", "layer": 0, "index": -1, "positions": []}])
    assert len(plan.items) == 2
    plan.list.setFocus()
    qtbot.keyClick(plan.list, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert [d["component"] for d in plan.items] == ["z"]
    qtbot.keyClick(plan.list, Qt.Key.Key_Z,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert [d["component"] for d in plan.items] == ["z", "mlp_out"]
    edit_menu = _menu(window, "Edit")
    assert plan.undo_action in edit_menu.actions()
    # Ctrl+Z in the prompt box stays the text's own undo.
    editor = window.prompt_editor.edit
    editor.setFocus()
    qtbot.keyClicks(editor, "abc")
    qtbot.keyClick(editor, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert len(plan.items) == 2


def test_answer_without_its_leading_space_is_flagged(qtbot, window, artifacts_dir):
    run_prompt_and_wait(qtbot, window, "When John and Mary went to the store, John gave a drink to")
    host = window.controller._worker.host
    assert host.model.to_tokens("Mary", prepend_bos=False).tolist() != \
        host.model.to_tokens(" Mary", prepend_bos=False).tolist()
    window.docks["attributionDock"].raise_()
    panel = _binding(window, "attributionDock").widget
    panel.answer_edit.clear()
    qtbot.keyClicks(panel.answer_edit, "Mary")
    qtbot.waitUntil(lambda: panel.space_box.isVisible(), timeout=10_000)
    assert "' Mary'" in panel.space_note.text() and "leading space" in panel.space_note.text()
    panel.grab().save(str(artifacts_dir / "attribution_space_note.png"))
    qtbot.mouseClick(panel.space_fix, Qt.MouseButton.LeftButton)
    assert panel.answer_edit.text() == " Mary" and not panel.space_box.isVisible()
    # The patching pairs say the same about their answer column.
    window.docks["patchingDock"].raise_()
    patching = _binding(window, "patchingDock").widget
    patching.set_pair(0, "When John and Mary went to the store, John gave a drink to",
                      "When John and Mary went to the store, Mary gave a drink to", "Mary", " John")
    qtbot.waitUntil(lambda: patching.pairs_editor.note.isVisible(), timeout=10_000)
    assert "Answer 'Mary' has no leading space" in patching.pairs_editor.note.text()
    patching.set_pair(0, "When John and Mary went to the store, John gave a drink to",
                      "When John and Mary went to the store, Mary gave a drink to", " Mary")
    qtbot.waitUntil(lambda: not patching.pairs_editor.note.isVisible(), timeout=10_000)
