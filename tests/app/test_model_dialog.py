"""The model picker: searchable supported names, folder choice, trust_remote_code warning."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt

from app.model_dialog import ModelDialog
from engine.model_sources import ModelSpec


def test_filter_and_pick_a_supported_name(qtbot):
    dialog = ModelDialog()
    qtbot.addWidget(dialog)
    assert dialog.spec() == ModelSpec()  # bundled by default
    qtbot.keyClicks(dialog.filter, "pythia-70")
    visible = [dialog.names.item(i).text() for i in range(dialog.names.count())
               if not dialog.names.item(i).isHidden()]
    assert visible and all("pythia-70" in v.lower() for v in visible)
    assert visible[0].lower().startswith("pythia-70")  # prefix matches rank first
    target = next(dialog.names.item(i) for i in range(dialog.names.count())
                  if dialog.names.item(i).text() == visible[0])
    rect = dialog.names.visualItemRect(target)
    qtbot.mouseClick(dialog.names.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert dialog.spec() == ModelSpec("hf", visible[0])


def test_remote_code_folder_is_flagged(qtbot, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "x.Y"}}))
    dialog = ModelDialog()
    qtbot.addWidget(dialog)
    dialog.folder_edit.setText(str(tmp_path))
    assert "trust_remote_code" in dialog.warning.text()
    assert dialog.spec().source == "folder"


def _click_load(qtbot, dialog) -> None:
    from PySide6.QtWidgets import QDialogButtonBox

    box = dialog.findChild(QDialogButtonBox)
    qtbot.mouseClick(box.button(QDialogButtonBox.StandardButton.Ok), Qt.MouseButton.LeftButton)


def test_unloadable_folder_is_refused_in_the_dialog(qtbot, tmp_path, tiny_gpt2_dir):
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_gpt2_dir, folder)
    (folder / "model.safetensors").rename(folder / "decoy.safetensors")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    dialog = ModelDialog()
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.folder_edit.setText(str(folder))
    _click_load(qtbot, dialog)
    assert dialog.isVisible() and dialog.result() == 0  # still open: nothing is loaded
    assert "only pickled weights" in dialog.warning.text()
    dialog.bundled.setChecked(True)
    with qtbot.waitSignal(dialog.accepted, timeout=10_000):
        _click_load(qtbot, dialog)


def test_config_symlinked_to_dev_zero_does_not_hang(qtbot, tmp_path):
    (tmp_path / "config.json").symlink_to("/dev/zero")
    dialog = ModelDialog()
    qtbot.addWidget(dialog)
    dialog.folder_edit.setText(str(tmp_path))  # read as the user types
    assert "cannot be read" in dialog.warning.text()
