"""Hostile session files: each is refused with a clear message and changes nothing at all.

Opening is all-or-nothing (issue 17): the manifest's schema, every panel's state and the model it
names are checked before anything is applied. Each case compares manifest_of(window), the session
path, the window's model spec and its title before and after.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.session_actions import manifest_of, open_path, save_to
from app.session_io import MAX_FILE_BYTES, SessionError, load_session, save_session

ROOT = Path(__file__).resolve().parents[2]
# Python's own words, which must never reach the user.
PYTHON_TEXT = ("object has no attribute", "not supported between", "Traceback", "Exceeds the limit",
               "object is not", "unhashable", "KeyError", "TypeError", "OverflowError",
               "RecursionError", "invalid literal", "argument must be")


def _raw(manifest_text: str, header_extra: dict | None = None) -> bytes:
    header = {"__metadata__": {"lensbench_manifest": manifest_text}, **(header_extra or {})}
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h


def _set(manifest: dict, path: str, value) -> dict:
    """``manifest`` with the dotted ``path`` (list indices as numbers) set to ``value``."""
    out = copy.deepcopy(manifest)
    node = out
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return out


def _baseline(win, tmp_path) -> tuple:
    """A session that differs from every default, so any change shows."""
    win.prompt_editor.set_prompt("keep me")
    win.prompt_editor.top_k.setValue(7)
    win.controller.selection.set_head(1, 2)
    win.session_path = str(tmp_path / "previous.lensbench")
    return _snapshot(win)


def _snapshot(win) -> tuple:
    return (manifest_of(win), win.session_path, win.model_spec, win.windowTitle(),
            win.controller.model_info)


def _valid(win) -> dict:
    m = manifest_of(win)
    m.update(schema_version=1, app="lensbench", prompt="opened prompt", top_k=12)
    m["selection"] = dict(m["selection"], prompt="opened prompt", layer=0, head=1)
    m["panels"]["patchingDock"]["plan"] = [{"component": "z", "layer": 1, "index": 0,
                                            "positions": [1, 2], "mode": "denoise"}]
    return m


def _assert_refused(win, path, before, needle: str) -> None:
    if win.errors.box is not None:
        win.errors.box.close()  # the user read the last message: the next one is on its own
    assert open_path(win, str(path)) is False
    text = win.errors.visible_text
    assert needle.lower() in text.lower(), text
    assert len(text) <= 1000
    assert not any(p in text for p in PYTHON_TEXT), text
    assert _snapshot(win) == before


def _pickle_folder(tmp_path: Path, tiny: Path) -> str:
    folder = tmp_path / "pickled"
    shutil.copytree(tiny, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    return str(folder)


# (case id, dotted field, value, expected words in the message); values are set in a valid
# manifest of the test window.
FIELD_CASES = [
    ("model-int", "model", 42, "model: expected an object"),
    ("model-name-int", "model.name", 42, "model.name: expected text"),
    ("model-name-huge", "model.name", "m" * 100_000, "text of 100000 characters"),
    ("model-ndev-huge", "model.n_devices", 2**40, "out of range"),
    ("model-etc", "model", {"source": "folder", "name": "/etc"}, "no config.json"),
    # /etc reached by climbing out of the working directory, wherever the tests run from
    ("model-dotdot", "model", {"source": "folder", "name": os.path.relpath("/etc")},
     "no config.json"),
    ("model-url", "model", {"source": "folder", "name": "https://evil.example/m"},
     "web address"),
    ("model-hf-url", "model", {"source": "hf", "name": "https://evil.example/m"},
     "not a Hugging Face model name"),
    ("model-unknown", "model", {"source": "hf", "name": "no-such-model-xyz"},
     "Unknown model name"),
    ("model-uncached", "model", {"source": "hf", "name": "someorg/uncached-model"},
     "not in the Hugging Face cache"),
    ("model-source", "model.source", "ftp", "Unknown model source"),
    ("model-device", "model.device", "tpu:0", "Unknown device"),
    ("prompt-int", "prompt", 42, "prompt: expected text"),
    ("prompt-huge", "prompt", "x" * 256_000, "at most 100000"),
    ("top_k-str", "top_k", "10", "top_k: expected a whole number"),
    ("top_k-2^31", "top_k", 2**31, "out of range"),
    ("top_k-bool", "top_k", True, "expected a whole number"),
    ("top_k-zero", "top_k", 0, "out of range"),
    ("top_k-float", "top_k", 1e300, "expected a whole number"),
    ("selection-list", "selection", [], "selection: expected an object"),
    ("selection-layer-str", "selection.layer", "1", "selection.layer"),
    ("selection-head-huge", "selection.head", 10**20, "a number too large"),
    ("selection-position-float", "selection.position", 1.5, "selection.position"),
    ("panels-int", "panels", 5, "panels: expected an object"),
    ("panel-str", "panels.patchingDock", "x", "panels.patchingDock: expected an object"),
    ("plan-positions-number", "panels.patchingDock.plan.0.positions", 3,
     "plan[0].positions: expected a list"),
    ("plan-no-component", "panels.patchingDock.plan.0", {"layer": 1}, "component: missing"),
    ("plan-huge-layer", "panels.patchingDock.plan.0.layer", 2**31, "out of range"),
    ("pairs-numbers", "panels.patchingDock.pairs", [[1, 2, 3, 4]], "pairs[0][0]: expected text"),
    ("pairs-number", "panels.patchingDock.pairs", 7, "pairs: expected a list"),
    ("pairs-short", "panels.patchingDock.pairs", [["a", "b"]], "expected 4 items"),
    ("attention-kept", "panels.attentionDock.kept", [1], "kept[0]: expected text"),
    ("attention-bos", "panels.attentionDock.hide_bos", "yes", "expected true or false"),
    ("attribution-position", "panels.attributionDock.position", 2**40, "out of range"),
    ("attribution-text", "panels.attributionDock.batch_text", {"a": 1}, "expected text"),
    ("induction-seq", "panels.inductionDock.seq_len", 2**31, "out of range"),
    ("induction-formula", "panels.inductionDock.formula", 42, "expected text"),
    ("features-train-lr", "panels.featuresDock.train.lr", "big", "train.lr: expected a number"),
    ("features-interventions", "panels.featuresDock.interventions",
     [{"feature": 1, "mode": "steer", "value": 1.0, "positions": 3}], "positions"),
    ("features-target", "panels.featuresDock.intervention_target", ["a"], "expected 2 items"),
    ("features-result", "panels.featuresDock.intervention_result", {"kl": ["x"]}, "kl[0]"),
    ("deep-panel", "panels.attentionDock.extra", json.loads("[" * 40 + "]" * 40),
     "nested more than"),
]


@pytest.mark.parametrize("field, value, needle", [c[1:] for c in FIELD_CASES],
                         ids=[c[0] for c in FIELD_CASES])
def test_hostile_field_is_refused_and_nothing_changes(window, tmp_path, field, value, needle):
    before = _baseline(window, tmp_path)
    path = tmp_path / "hostile.lensbench"
    path.write_bytes(_raw(json.dumps(_set(_valid(window), field, value))))
    _assert_refused(window, path, before, needle)


def test_pickle_only_model_folder_is_refused(window, tmp_path, tiny_gpt2_dir):
    before = _baseline(window, tmp_path)
    path = tmp_path / "hostile.lensbench"
    model = {"source": "folder", "name": _pickle_folder(tmp_path, tiny_gpt2_dir)}
    path.write_bytes(_raw(json.dumps(_set(_valid(window), "model", model))))
    _assert_refused(window, path, before, "only pickled weights")


def test_model_whose_load_failed_is_checked_again(qtbot, tmp_path, tiny_gpt2_dir):
    """The window asked for a folder whose load failed: a session naming that folder is still
    checked (and refused), and saving never writes the failed spec as the session's model."""
    from app.main_window import MainWindow
    from engine.model_sources import ModelSpec

    win = MainWindow(restore_layout=False, persist=False)
    qtbot.addWidget(win)
    bad = ModelSpec("folder", _pickle_folder(tmp_path, tiny_gpt2_dir), "cpu")
    with qtbot.waitSignal(win.controller.model_failed, timeout=60_000):
        win.load_model(bad)
    assert win.controller.loaded_spec is None
    before = _baseline(win, tmp_path)
    manifest = {"schema_version": 1, "model": dict(bad.__dict__), "prompt": "new"}
    path = tmp_path / "s.lensbench"
    path.write_bytes(_raw(json.dumps(manifest)))
    _assert_refused(win, path, before, "only pickled weights")
    win.close()
    assert win.controller.thread.isFinished()


# Manifests that are not what json.dumps writes: hand-written JSON text.
TEXT_CASES = [
    ("infinity", '{"schema_version": 1, "top_k": Infinity}', "Infinity or NaN"),
    ("nan", '{"schema_version": 1, "panels": {"featuresDock": {"train": {"lr": NaN}}}}',
     "Infinity or NaN"),
    ("5000-digits", '{"schema_version": 1, "top_k": ' + "9" * 5000 + "}", "corrupt manifest"),
    ("deep-manifest", '{"schema_version": 1, "prompt": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "nested too deeply"),
    ("version-huge", '{"schema_version": ' + "9" * 5000 + "}", "corrupt manifest"),
    ("version-str", '{"schema_version": "1"}', "schema_version"),
]


@pytest.mark.parametrize("text, needle", [c[1:] for c in TEXT_CASES],
                         ids=[c[0] for c in TEXT_CASES])
def test_hostile_manifest_text_is_refused(window, tmp_path, text, needle):
    before = _baseline(window, tmp_path)
    path = tmp_path / "hostile.lensbench"
    path.write_bytes(_raw(text))
    _assert_refused(window, path, before, needle)


def test_deeply_nested_header_is_refused(window, tmp_path):
    before = _baseline(window, tmp_path)
    h = b'{"__metadata__": {"lensbench_manifest": "{}"}, "x": ' + b"[" * 200_000 + \
        b"]" * 200_000 + b"}"
    path = tmp_path / "hostile.lensbench"
    path.write_bytes(struct.pack("<Q", len(h)) + h)
    _assert_refused(window, path, before, "not a Lensbench session")


def test_special_files_are_refused_without_reading(window, tmp_path):
    before = _baseline(window, tmp_path)
    link = tmp_path / "zero.lensbench"
    link.symlink_to("/dev/zero")  # stat() says 0 bytes; reading never ends
    _assert_refused(window, link, before, "not a regular file")
    fifo = tmp_path / "pipe.lensbench"
    os.mkfifo(fifo)  # reading blocks forever
    _assert_refused(window, fifo, before, "not a regular file")
    _assert_refused(window, tmp_path, before, "is a folder")
    big = tmp_path / "big.lensbench"
    with open(big, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    _assert_refused(window, big, before, "MiB")


def test_valid_session_applies_fully(qtbot, window, tmp_path):
    """The counterpart: a valid file applies every field (and keeps the loaded model)."""
    _baseline(window, tmp_path)
    manifest = _valid(window)
    path = tmp_path / "good.lensbench"
    path.write_bytes(_raw(json.dumps(manifest)))
    with qtbot.waitSignal(window.controller.busy_changed, timeout=60_000,
                          check_params_cb=lambda busy: busy is False):
        assert open_path(window, str(path))
    after = manifest_of(window)
    for key in ("model", "prompt", "top_k", "selection"):
        assert after[key] == manifest[key], key
    assert after["panels"]["patchingDock"]["plan"] == manifest["panels"]["patchingDock"]["plan"]
    assert window.session_path == str(path)


def test_a_restore_that_fails_puts_the_previous_session_back(window, tmp_path, monkeypatch):
    """Last defence: should a restore still fail after every check, what was applied is undone
    and the user gets a message (no half-applied session)."""
    before = _baseline(window, tmp_path)
    # The last binding whose state the file holds (empty notes are left out of files).
    last = [b for b in window.bindings if not getattr(b, "omit_when_empty", False)][-1]

    def broken(state):
        raise RuntimeError("a bug in a panel's restore")

    monkeypatch.setattr(last, "restore_session_state", broken)
    path = tmp_path / "good.lensbench"
    path.write_bytes(_raw(json.dumps(_valid(window))))
    assert open_path(window, str(path)) is False
    assert "could not be applied" in window.errors.visible_text
    assert _snapshot(window) == before


def test_shipped_sessions_pass_the_schema(window):
    """Every .lensbench file in the repository (lessons, examples) is valid."""
    from app.session_schema import validate_manifest

    files = subprocess.run(["git", "ls-files", "*.lensbench"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    assert len(files) >= 5
    for f in files:
        manifest, _ = load_session(ROOT / f)
        validate_manifest(manifest)
        for b in window.bindings:
            assert b.validate_session_state(manifest["panels"].get(b.object_name, {})) is None


# -- property test: mutated files never raise, and either apply fully or change nothing ----------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=3),
    max_leaves=6)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            if prefix or k != "window_state":
                yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _check_all_or_nothing(win, path: Path, before: tuple, wanted: dict | None) -> None:
    if win.errors.box is not None:
        win.errors.box.close()  # a fresh message per example
    ok = open_path(win, str(path))  # must not raise
    if not ok:
        assert _snapshot(win) == before
        assert not any(p in win.errors.visible_text for p in PYTHON_TEXT)
        return
    after = manifest_of(win)
    assert wanted is not None
    assert after["prompt"] == wanted.get("prompt", "")
    assert after["top_k"] == wanted.get("top_k", 10)
    assert win.session_path == str(path)


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_bytes_never_raise(window, tmp_path, data):
    good = tmp_path / "good.lensbench"
    manifest = _valid(window)
    manifest["prompt"] = manifest["selection"]["prompt"] = ""  # applying runs no jobs
    save_session(good, manifest)
    raw = bytearray(good.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[:data.draw(st.integers(0, len(raw) - 1), label="offset")]
    else:
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            i = data.draw(st.integers(0, len(raw) - 1), label="byte")
            raw[i] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    path = tmp_path / "mutated.lensbench"
    path.write_bytes(bytes(raw))
    win = window
    win.session_path = "previous"
    before = _snapshot(win)
    try:
        wanted = load_session(path)[0]
    except SessionError:
        wanted = None
    _check_all_or_nothing(win, path, before, wanted)
    if win.session_path != "previous":  # applied: back to the baseline for the next example
        assert open_path(win, str(good))


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_type_swapped_manifests_never_raise(window, tmp_path, data):
    manifest = _valid(window)
    manifest["prompt"] = manifest["selection"]["prompt"] = ""
    paths = list(_paths(manifest))[1:]
    target = data.draw(st.sampled_from(paths), label="field")
    value = data.draw(JSON_VALUES, label="value")
    node = manifest
    for k in target[:-1]:
        node = node[k]
    node[target[-1]] = value
    path = tmp_path / "swapped.lensbench"
    path.write_bytes(_raw(json.dumps(manifest)))
    win = window
    win.session_path = "previous"
    before = _snapshot(win)
    _check_all_or_nothing(win, path, before, manifest)
    if win.session_path != "previous":
        good = tmp_path / "good.lensbench"
        save_session(good, _set(_valid(window), "prompt", ""))
        assert open_path(win, str(good))


# -- saving: errors in words, the work kept ---------------------------------------------------

@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "disk is full"),
                                         (errno.EACCES, "permission"),
                                         (errno.EROFS, "read-only disk")])
def test_failed_save_says_why_and_keeps_the_work(window, tmp_path, monkeypatch, code, words):
    before = _baseline(window, tmp_path)

    def fail(path, data):
        raise OSError(code, "Unknown error")

    monkeypatch.setattr("app.session_io.write_atomic", fail)
    assert save_to(window, str(tmp_path / "new.lensbench")) is False
    text = window.errors.visible_text
    assert words in text and "Unknown error" not in text
    assert _snapshot(window) == before  # prompt, panels, session path: all still here
    assert not (tmp_path / "new.lensbench").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_save_into_read_only_folder(window, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert save_to(window, str(folder / "s.lensbench")) is False
        assert "permission" in window.errors.visible_text
    finally:
        folder.chmod(0o755)


def test_full_disk_is_diagnosed_from_the_folder(tmp_path, monkeypatch):
    """Qt says "Unknown error" for ENOSPC: the folder's free space names the cause."""
    from app import session_io

    class Full:
        f_flag, f_bavail, f_frsize = 0, 0, 4096

    monkeypatch.setattr(session_io.os, "statvfs", lambda p: Full())
    err = session_io._diagnose(tmp_path / "s.lensbench", 10_000, "Unknown error")
    assert err.errno == errno.ENOSPC
    Full.f_flag = os.ST_RDONLY
    assert session_io._diagnose(tmp_path / "s.lensbench", 1, "").errno == errno.EROFS


# -- the command line --------------------------------------------------------------------------

def test_command_line_hostile_session_exits_cleanly(tmp_path, tiny_gpt2_dir):
    """``lensbench FILE`` with a hostile file: a message, the default start, a clean exit."""
    bad = tmp_path / "hostile.lensbench"
    bad.write_bytes(_raw(json.dumps({"schema_version": 1, "model": 42, "top_k": 2**40})))
    out = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp_path / "cfg"),
               XDG_DATA_HOME=str(tmp_path / "data"))
    env.pop("LENSBENCH_STARTUP_TRACE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "app", "--model", str(tiny_gpt2_dir), "--device", "cpu",
         "--screenshot", str(out), "--size", "800x600", str(bad)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "lensbench: hostile.lensbench cannot be opened: model: expected an object" \
        in proc.stderr
    assert "Traceback" not in proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_error_box_clips_any_long_text(window):
    """Last defence: a 512k-character message (it crashed Qt's layout) is clipped."""
    from PySide6.QtWidgets import QLabel

    from engine.errors import ErrorInfo

    window.errors.show("session", ErrorInfo("X", "m" * 512_000, "t" * 10**6, "h" * 100_000))
    box = window.errors.box
    assert len(window.errors.visible_text) <= 1000 and window.errors.visible_text.endswith("…")
    assert len(box.informativeText().replace("\u200b", "")) <= 1000
    assert len(box.detailedText()) < 25_000
    box.adjustSize()
    # wrapped inside the box (Qt caps its width), not cut off at its edge (was 800x14098 px)
    assert box.width() <= 1000 and box.height() < 1500
    assert box.findChild(QLabel, "qt_msgbox_label").height() > 100


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_type_swapped_results_never_raise(qtbot, window, tmp_path, data):
    """Saved results (the version-2 fixture's, marked as this model's so they are decoded and
    drawn) with one value anywhere in their tree replaced: the file is refused with a clear
    message, or it opens and every panel shows a result or computes one; nothing raises."""
    fixture = ROOT / "tests" / "fixtures" / "sessions" / "v2.lensbench"
    _saved, arrays = load_session(fixture)
    manifest = _valid(window)
    manifest["prompt"] = manifest["selection"]["prompt"] = ""
    results = json.loads(json.dumps(_saved["results"]))
    results["fingerprint"] = window.controller.model_info.fingerprint
    paths = list(_paths(results))[1:]
    target = data.draw(st.sampled_from(paths), label="field")
    node = results
    for k in target[:-1]:
        node = node[k]
    node[target[-1]] = data.draw(JSON_VALUES, label="value")
    manifest["results"] = results
    path = tmp_path / "results.lensbench"
    try:
        save_session(path, manifest, arrays)
    except (TypeError, ValueError):  # JSON cannot hold what was drawn (e.g. a NaN key)
        return
    win = window
    win.session_path = "previous"
    before = _snapshot(win)
    if win.errors.box is not None:
        win.errors.box.close()
    if not open_path(win, str(path)):
        assert _snapshot(win) == before
        assert not any(p in win.errors.visible_text for p in PYTHON_TEXT)
        return
    qtbot.waitUntil(lambda: not win.controller.busy, timeout=60_000)
    assert win.session_path == str(path)
