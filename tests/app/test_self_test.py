"""--self-test, --version, and sessions opened by the OS (macOS). --screenshot's isolation is
checked in test_cli.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _clean_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "HF_"))}
    env.update(HOME=str(home), QT_QPA_PLATFORM="offscreen")
    return env


def test_self_test_passes_and_touches_nothing_of_the_user(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.run([sys.executable, "-m", "app", "--self-test"], cwd=ROOT,
                          env=_clean_env(home), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("Lensbench 0.1.0 self-test passed: 12 checks")
    for name in ("model", "predictions", "attention", "attribution", "induction", "ablation",
                 "patching", "session", "lessons"):
        assert name in lines[0]
    # no settings, autosave, HF cache or anything else under the user's home
    assert list(home.rglob("*")) == []


def test_self_test_fails_with_the_reason(qtbot, monkeypatch, tiny_gpt2_dir, capsys, tmp_path):
    """With a wrong model in place of the organism, the model check fails and says why."""
    from app.self_test import run_self_test

    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME",
                "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY",
                "QT_QPA_PLATFORM"):
        monkeypatch.setenv(var, os.environ.get(var, str(tmp_path / var)))
    monkeypatch.setattr("engine.model_sources.BUNDLED_DIR", tiny_gpt2_dir)
    assert run_self_test() == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("Lensbench 0.1.0 self-test FAILED: model: the bundled organism "
                              "has 2 layers, 4 heads")


def test_version(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "app", "--version"], cwd=ROOT,
                          env=_clean_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert proc.stdout.startswith("Lensbench 0.1.0 (torch ") and "PySide6" in proc.stdout


def test_a_session_opened_by_the_os_opens_in_the_window(qtbot, qapp, window, tmp_path):
    """macOS delivers a double-clicked *.lensbench as a QFileOpenEvent; it opens the session
    (also when it arrives before the window exists)."""
    from PySide6.QtGui import QFileOpenEvent
    from PySide6.QtWidgets import QApplication

    from app.desktop import FileOpenFilter
    from app.session_actions import manifest_of
    from app.session_io import save_session

    path = tmp_path / "from finder.lensbench"
    window.prompt_editor.set_prompt("opened by the OS")
    save_session(path, manifest_of(window))
    window.prompt_editor.set_prompt("something else")
    opener = FileOpenFilter(qapp)
    QApplication.sendEvent(qapp, QFileOpenEvent(str(path)))
    assert opener.pending == [str(path)]
    assert window.prompt_editor.prompt() == "something else"
    opener.set_window(window)
    assert window.prompt_editor.prompt() == "opened by the OS"
    assert window.session_path == str(path)
    qapp.removeEventFilter(opener)
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=60_000)
