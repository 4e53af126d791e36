"""Crash recovery: an instance killed with unsaved work gets it back, a clean exit removes only
its own autosave, and a crashed instance's autosave is never overwritten."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QCoreApplication, Qt, QTimer
from PySide6.QtWidgets import QApplication

from app.session_io import load_session, save_session
from tests.conftest import ROOT

UNIQUE = "The lighthouse keeper counted 7391 gulls before"


def click_in_recovery(qtbot, button: str, seen: list) -> None:
    """Click the recovery dialog's ``button`` ("restore", "discard", "later") once it is up."""
    from app.recovery import RecoveryDialog

    def attempt() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, RecoveryDialog):
            QTimer.singleShot(10, attempt)
            return
        seen.append([dialog.list.item(i).text() for i in range(dialog.list.count())])
        qtbot.mouseClick(getattr(dialog, f"{button}_button"), Qt.MouseButton.LeftButton)

    QTimer.singleShot(0, attempt)


@pytest.fixture()
def lensbench_identity(monkeypatch, tmp_path):
    """This process as the real app sees its profile: the app's names, a private data folder."""
    app = QCoreApplication.instance()
    names = app.applicationName(), app.organizationName()
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    app.setApplicationName("Lensbench")
    app.setOrganizationName("Lensbench")
    yield tmp_path
    app.setApplicationName(names[0])
    app.setOrganizationName(names[1])


def dead_instance(folder: Path, prompt: str) -> Path:
    """The autosave of an instance that crashed: its session and the lock it held when killed."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / "99999-crashed"
    code = ("import sys, time\nfrom PySide6.QtCore import QLockFile\n"
            "lock = QLockFile(sys.argv[1]); lock.setStaleLockTime(0)\n"
            "print(lock.tryLock(0), flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(stem) + ".lock"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "True"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    save_session(stem.with_suffix(".lensbench"), {"prompt": prompt, "model": {}})
    assert stem.with_suffix(".lock").is_file()  # what a crash leaves behind
    return stem.with_suffix(".lensbench")


def test_killed_app_gets_its_unsaved_work_back(qtbot, tmp_path, tiny_gpt2_dir,
                                               lensbench_identity, monkeypatch):
    """`python -m app --prompt ...`, SIGKILL once its autosave exists, then the next start's
    dialog restores the prompt (run in this process, on the same profile)."""
    profile = lensbench_identity
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HOME=str(profile / "home"),
               XDG_CONFIG_HOME=str(profile / "config"), XDG_DATA_HOME=str(profile / "data"),
               LENSBENCH_AUTOSAVE_MS="200")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "--model", str(tiny_gpt2_dir), "--device", "cpu",
         "--prompt", UNIQUE], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    data = profile / "data"
    try:
        qtbot.waitUntil(lambda: bool(list(data.rglob("autosave/*.lensbench")))
                        or proc.poll() is not None, timeout=120_000)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stderr.close()
    crashed = list(data.rglob("autosave/*.lensbench"))
    assert len(crashed) == 1 and load_session(crashed[0])[0]["prompt"] == UNIQUE
    assert crashed[0].with_suffix(".lock").is_file()  # the dead instance's lock

    from app import recovery
    from app.autosave import autosave_dir
    from app.main_window import MainWindow

    assert autosave_dir() == crashed[0].parent  # the real app's folder, seen from here
    win = MainWindow(restore_layout=False)
    qtbot.addWidget(win)
    win.show()
    seen: list = []
    click_in_recovery(qtbot, "restore", seen)
    assert recovery.offer_at_start(win)
    assert len(seen[0]) == 1 and UNIQUE in seen[0][0]
    assert win.prompt_editor.prompt() == UNIQUE
    assert win.session_path is None and win.isWindowModified()  # unsaved until saved
    qtbot.waitUntil(lambda: not win.controller.busy, timeout=60_000)
    assert win.controller.last_prompt_result.prompt == UNIQUE
    # its work now lives in this instance's autosave; the crashed copy is gone
    assert load_session(win.autosaver.path)[0]["prompt"] == UNIQUE
    assert not crashed[0].exists()
    assert recovery.crashed_autosaves() == []
    win.close()
    assert not win.autosaver.path.exists()


def test_clean_exit_removes_its_autosave_and_leaves_a_crashed_one(qtbot, lensbench_identity,
                                                                   monkeypatch):
    from app import recovery
    from app.autosave import autosave_dir
    from app.main_window import MainWindow

    crashed = dead_instance(autosave_dir(), "crashed work")
    before = crashed.read_bytes(), crashed.stat().st_mtime_ns
    monkeypatch.setenv("LENSBENCH_AUTOSAVE_MS", "100")
    win = MainWindow(restore_layout=False)
    qtbot.addWidget(win)
    win.show()
    assert win.autosaver.lock_path.is_file() and win.autosaver.path != crashed
    assert not win.autosaver.path.exists()  # nothing changed: nothing to autosave
    win.prompt_editor.edit.setPlainText("live work")
    qtbot.waitUntil(win.autosaver.path.exists, timeout=10_000)
    assert load_session(win.autosaver.path)[0]["prompt"] == "live work"
    # a running instance's autosave is not a crash's; the crashed one is listed
    listed = recovery.crashed_autosaves()
    assert [c.path for c in listed] == [crashed] and listed[0].prompt == "crashed work"
    for c in listed:
        c.release()
    qtbot.wait(300)  # several autosave periods (the timer is what is under test)
    assert (crashed.read_bytes(), crashed.stat().st_mtime_ns) == before
    win.close()  # the work is discarded (tests/app/conftest.py answers the question)
    assert not win.autosaver.path.exists() and not win.autosaver.lock_path.exists()
    assert (crashed.read_bytes(), crashed.stat().st_mtime_ns) == before
    assert [c.path for c in recovery.crashed_autosaves()] == [crashed]


def test_saving_drops_the_autosave_and_unmodified_work_writes_none(qtbot, lensbench_identity,
                                                                   monkeypatch, tmp_path):
    from app.main_window import MainWindow
    from app.session_actions import save_to

    monkeypatch.setenv("LENSBENCH_AUTOSAVE_MS", "100")
    win = MainWindow(restore_layout=False)
    qtbot.addWidget(win)
    win.show()
    win.prompt_editor.edit.setPlainText("to be saved")
    qtbot.waitUntil(win.autosaver.path.exists, timeout=10_000)
    assert save_to(win, str(tmp_path / "saved.lensbench"))
    assert not win.autosaver.path.exists()
    win.autosaver.tick()
    assert not win.autosaver.path.exists()  # unmodified: nothing to keep
    win.close()


def test_recover_menu_later_keeps_and_discard_deletes(qtbot, window, lensbench_identity):
    from app import recovery
    from app.autosave import autosave_dir

    older = dead_instance(autosave_dir(), "older work")
    os.utime(older, (1_700_000_000, 1_700_000_000))
    newer = save_session(autosave_dir() / "88888-crashed.lensbench", {"prompt": "newer work"})
    del newer
    seen: list = []
    click_in_recovery(qtbot, "later", seen)
    window.action_recover.trigger()
    assert "newer work" in seen[0][0] and "older work" in seen[0][1]  # newest first
    assert older.exists() and len(recovery.crashed_autosaves(autosave_dir())) == 2
    for c in recovery.crashed_autosaves():  # Later let every lock go again
        c.release()
    click_in_recovery(qtbot, "discard", seen)  # the newest is selected: discarded
    QTimer.singleShot(50, lambda: click_in_recovery(qtbot, "later", seen))
    window.action_recover.trigger()
    assert not (autosave_dir() / "88888-crashed.lensbench").exists() and older.exists()
    assert window.prompt_editor.prompt() != "older work"


def test_unreadable_autosave_is_listed_but_not_restorable(qtbot, window, lensbench_identity):
    from app import recovery
    from app.autosave import autosave_dir

    folder = autosave_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "77777-bad.lensbench").write_bytes(b"garbage")
    entries = recovery.crashed_autosaves()
    assert len(entries) == 1 and not entries[0].readable
    dialog = recovery.RecoveryDialog(entries, window)
    assert "unreadable" in dialog.list.item(0).text()
    assert not dialog.restore_button.isEnabled()
    dialog.reject()


def test_no_trace_without_persist(qtbot, lensbench_identity):
    from app.autosave import autosave_dir
    from app.main_window import MainWindow

    win = MainWindow(restore_layout=False, persist=False)
    qtbot.addWidget(win)
    win.prompt_editor.edit.setPlainText("screenshot run")
    win.autosaver.tick()
    win.close()
    assert not autosave_dir().exists()
