"""Start-up: the window appears without torch, and a model that fails to load says why, once.

Drives the window as ``./lensbench.sh --model X`` does: load a model, type the prompt, click Run
while the load is still under way.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from PySide6.QtCore import Qt

from tests.conftest import ROOT

PROMPT = "When John and Mary went to the store, John gave a drink to"


def test_window_is_built_and_shown_without_torch_or_transformer_lens():
    """The worker thread imports them with the first model; the window must not wait for it."""
    code = (
        "import sys\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from app.main_window import MainWindow\n"
        "w = MainWindow(restore_layout=False)\n"
        "w.show(); app.processEvents()\n"
        "heavy = [m for m in ('torch', 'transformer_lens', 'transformers') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
        "w.controller.shutdown()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**__import__("os").environ,
                                           "QT_QPA_PLATFORM": "offscreen"})
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


@pytest.fixture()
def bare_window(qtbot):
    """A shown main window with no model, as right after start-up."""
    from app.main_window import MainWindow

    win = MainWindow(restore_layout=False)
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()
    assert win.controller.thread.isFinished()


def _start(qtbot, win, spec) -> None:
    """Load ``spec`` and click Run at once (what --model does); wait until everything settled."""
    win.load_model(spec)
    win.prompt_editor.edit.setPlainText(PROMPT)
    qtbot.mouseClick(win.prompt_editor.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not win.controller.busy and win.errors.box is not None,
                    timeout=120_000)


def _panels(win):
    return {b.object_name: b.widget for b in win.bindings}


def test_failed_start_up_load_shows_the_real_reason_and_nothing_waits(qtbot, bare_window,
                                                                        tiny_gpt2_dir, tmp_path,
                                                                        artifacts_dir):
    win = bare_window
    folder = tmp_path / "bin-only"
    folder.mkdir()
    for f in tiny_gpt2_dir.iterdir():  # config and tokenizer, but pickled weights only
        if not f.name.endswith(".safetensors"):
            shutil.copy(f, folder / f.name)
    (folder / "pytorch_model.bin").write_bytes(b"not loaded: pickles are refused")
    from engine.model_sources import ModelSpec

    errors = []
    win.controller.error.connect(lambda ch, info: errors.append(info.message))
    _start(qtbot, win, ModelSpec("folder", str(folder), "cpu"))
    win.grab().save(str(artifacts_dir / "startup_failed_load.png"))
    # The box shows why the load failed, and it is the only error reported.
    assert win.errors.box.isVisible()
    assert "only pickled weights (pytorch_model.bin)" in win.errors.box.text()
    assert all("No model is loaded" not in m for m in errors), errors
    # The prompt box and every panel say there is no model, and why; none waits for one.
    editor = win.prompt_editor.message
    assert editor.isVisible() and "No model is loaded" in editor.text()
    assert "pickled weights" in editor.text()
    panels = _panels(win)
    attention = panels["attentionDock"].summary.text()
    assert "Computing" not in attention and "No model is loaded" in attention
    assert "pickled weights" in panels["predictionsDock"].summary.text()
    assert win.status.model_label.text() == "No model loaded"
    assert not win.controller.busy
    # A later Run says the same, in place; nothing is queued.
    qtbot.mouseClick(win.prompt_editor.run_button, Qt.MouseButton.LeftButton)
    assert not win.controller.busy
    assert "pickled weights" in win.prompt_editor.message.text()


def test_offline_hf_name_names_the_hf_download_command(qtbot, bare_window, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    from engine.model_sources import ModelSpec

    _start(qtbot, bare_window, ModelSpec("hf", "gpt2-small", "cpu"))
    box = bare_window.errors.box
    assert "not in the Hugging Face cache" in box.text()
    # huggingface_hub >= 1.0 ships the `hf` command (huggingface-cli is gone).
    assert "`hf download gpt2`" in box.informativeText()
    assert "huggingface-cli" not in box.informativeText()
    assert "No model is loaded" in _panels(bare_window)["attentionDock"].summary.text()


def test_hf_download_command_follows_the_installed_hub():
    from importlib.metadata import version

    from engine.model_sources import download_command

    major, minor = (int(x) for x in version("huggingface_hub").split(".")[:2])
    # `hf` arrived in huggingface_hub 0.34; 1.0 removed `huggingface-cli`.
    expected = "hf" if (major, minor) >= (0, 34) else "huggingface-cli"
    assert download_command("gpt2") == f"{expected} download gpt2"


def test_error_box_keeps_a_load_failure_when_more_errors_follow(qtbot, bare_window):
    from engine.errors import ErrorInfo

    view = bare_window.errors
    view.show("model", ErrorInfo("ModelLoadError", "Could not load X.", "", "Try Y.", "model"))
    view.show("attention", ErrorInfo("ValueError", "boom", "", "a bug", "error"))
    assert view.box.text() == "Could not load X."
    assert "boom" in view.box.informativeText()
    view.box.close()
    view.show("attention", ErrorInfo("ValueError", "boom", "", "a bug", "error"))
    assert view.box.text() == "boom"


def test_launcher_checks_dependencies_without_importing_them():
    script = (ROOT / "lensbench.sh").read_text(encoding="utf-8")
    assert "import torch" not in script and "find_spec" in script
    json.dumps(script)  # plain text


def test_model_imports_bypass_pysides_import_hook():
    """PySide6 wraps builtins.__import__ (25% more CPU for torch + TransformerLens); the worker's
    load uses Python's own, and puts PySide6's back afterwards."""
    code = (
        "import app, builtins\n"
        "import PySide6.QtWidgets\n"
        "from app.plain_imports import plain_imports\n"
        "hooked = builtins.__import__\n"
        "assert hooked is not app.PLAIN_IMPORT, 'PySide6 installed no hook: nothing to test'\n"
        "with plain_imports():\n"
        "    assert builtins.__import__ is app.PLAIN_IMPORT\n"
        "    import json\n"
        "assert builtins.__import__ is hooked\n"
        "print('OK')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "OK", out.stderr
