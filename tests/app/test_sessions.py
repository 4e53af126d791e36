"""Session files: round trip through the real window, atomic saves, hostile files refused."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from app.session_io import SCHEMA_VERSION, SessionError, load_session, save_session
from tests.app.conftest import run_prompt_and_wait


def test_round_trip_arrays_and_manifest(tmp_path):
    path = tmp_path / "a.lensbench"
    arrays = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "ids": np.array([1, 2], np.int64)}
    save_session(path, {"prompt": "hi"}, arrays)
    manifest, loaded = load_session(path)
    assert manifest["prompt"] == "hi" and manifest["schema_version"] == SCHEMA_VERSION
    np.testing.assert_array_equal(loaded["x"], arrays["x"])
    np.testing.assert_array_equal(loaded["ids"], arrays["ids"])


def _raw(header: dict, body: bytes = b"") -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + body


@pytest.mark.parametrize("content, message", [
    (b"", "too short"),
    (b"\x80\x04\x95pickle-data-here", "bad header size"),
    (_raw({"__metadata__": {}}), "no manifest"),
    (_raw({"__metadata__": {"lensbench_manifest": "{oops"}}), "corrupt manifest"),
    (_raw({"__metadata__": {"lensbench_manifest": json.dumps({"schema_version": 99})}}),
     "newer Lensbench"),
    (_raw({"__metadata__": {"lensbench_manifest": json.dumps({"schema_version": 1})},
           "x": {"dtype": "O", "shape": [1], "data_offsets": [0, 8]}}), "unsupported type"),
    (_raw({"__metadata__": {"lensbench_manifest": json.dumps({"schema_version": 1})},
           "x": {"dtype": "F32", "shape": [10**9, 10**9], "data_offsets": [0, 8]}}, b"\0" * 8),
     "corrupt"),
])
def test_hostile_files_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.lensbench"
    path.write_bytes(content)
    with pytest.raises(SessionError, match=message):
        load_session(path)


def test_failed_save_keeps_previous_file(tmp_path):
    path = tmp_path / "s.lensbench"
    save_session(path, {"prompt": "old"})
    with pytest.raises(SessionError):
        save_session(path, {"prompt": "new"}, {"bad": np.array(["text"])})
    assert load_session(path)[0]["prompt"] == "old"


def test_window_save_and_reopen(qtbot, window, tmp_path):
    from app.session_actions import open_path, save_to

    run_prompt_and_wait(qtbot, window, "When John and Mary went to the store")
    window.controller.selection.set_head(1, 2)
    path = str(tmp_path / "w.lensbench")
    assert save_to(window, path)
    window.prompt_editor.edit.setPlainText("something else")
    window.controller.selection.set_head(0, 0)
    with qtbot.waitSignal(window.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        assert open_path(window, path)
    assert window.prompt_editor.prompt() == "When John and Mary went to the store"
    assert (window.controller.selection.layer, window.controller.selection.head) == (1, 2)
    assert window.controller.last_prompt_result.prompt == "When John and Mary went to the store"


def test_opening_garbage_keeps_the_session(qtbot, window, tmp_path):
    from app.session_actions import open_path

    window.prompt_editor.edit.setPlainText("keep me")
    bad = tmp_path / "garbage.lensbench"
    bad.write_bytes(b"not a session at all")
    assert not open_path(window, str(bad))
    assert window.prompt_editor.prompt() == "keep me"
    assert window.errors.box.isVisible() and "not a Lensbench session" in window.errors.box.text()


def test_autosave_goes_to_app_data_and_recovers(qtbot, window):
    """Each instance autosaves into its own file in the app-data folder; File > Recover offers
    only the autosaves of instances that are gone (tests/app/test_recovery.py restores one)."""
    import os

    from app.recovery import crashed_autosaves

    window.prompt_editor.edit.setPlainText("autosaved prompt")
    assert window.autosaver.save_now()
    path = window.autosaver.path
    assert path.is_file() and path.parent.name == "autosave"
    assert str(path).startswith(os.environ["XDG_DATA_HOME"])  # the platform's app-data folder
    assert load_session(path)[0]["prompt"] == "autosaved prompt"
    assert path not in [c.path for c in crashed_autosaves()]  # this instance is alive
    window.action_recover.trigger()  # nothing crashed: says so, changes nothing
    assert "no unsaved work" in window.statusBar().currentMessage()
    assert window.prompt_editor.prompt() == "autosaved prompt"
