"""The prompt editor refuses a paste that would make the prompt unreasonably long."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from widgets.prompt_editor import MAX_PROMPT_CHARS, PromptEditor


def _paste(qtbot, editor: PromptEditor, text: str) -> None:
    QApplication.clipboard().setText(text)
    editor.edit.setFocus()
    qtbot.keyClick(editor.edit, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)


def test_huge_paste_is_refused_and_a_normal_one_is_kept(qtbot):
    editor = PromptEditor()
    qtbot.addWidget(editor)
    editor.show()
    editor.set_prompt("The cat ")
    editor.edit.moveCursor(editor.edit.textCursor().MoveOperation.End)
    _paste(qtbot, editor, "x" * 256_000)  # one line of 256 KB froze the window for seconds
    assert editor.prompt() == "The cat "
    assert editor.message.isVisible()
    assert "256,008 characters" in editor.message.text()
    assert f"{MAX_PROMPT_CHARS:,}" in editor.message.text()
    _paste(qtbot, editor, "sat on the mat")
    assert editor.prompt() == "The cat sat on the mat"
    assert not editor.message.isVisible()  # the edit cleared the refusal


def test_paste_that_replaces_a_selection_counts_what_stays(qtbot):
    editor = PromptEditor()
    qtbot.addWidget(editor)
    editor.show()
    editor.set_prompt("y" * MAX_PROMPT_CHARS)
    editor.edit.selectAll()
    _paste(qtbot, editor, "z" * MAX_PROMPT_CHARS)  # replaces all: exactly at the limit
    assert editor.prompt() == "z" * MAX_PROMPT_CHARS
