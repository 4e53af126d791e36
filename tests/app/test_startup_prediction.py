"""Start-up's first prediction: answered from the checkpoint while TransformerLens loads, then
replaced by TransformerLens's own, with the same numbers; a load that fails takes it back.

Drives the window as ``app.main`` does: load with the prompt as a preview, then Run (queued
behind the load).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

PROMPT = "When John and Mary went to the store, John gave a drink to"


@pytest.fixture()
def bare_window(qtbot):
    from app.main_window import MainWindow

    win = MainWindow(restore_layout=False)
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    yield win
    win.close()
    assert win.controller.thread.isFinished()


def _binding(win):
    return next(b for b in win.bindings if b.object_name == "predictionsDock")


def _start(win, spec) -> None:
    """What app.main does at start-up."""
    from engine.prompt_result import PromptRequest

    top_k = win.prompt_editor.top_k.value()
    win.load_model(spec, preview=PromptRequest(PROMPT, top_k))
    win.prompt_editor.set_prompt(PROMPT)
    win._run_prompt(PROMPT, top_k, False)


def test_early_prediction_shows_first_and_transformer_lens_replaces_it_with_equal_numbers(
        qtbot, bare_window, artifacts_dir):
    from PySide6.QtWidgets import QApplication

    from engine.model_sources import ModelSpec

    win = bare_window
    binding, panel = _binding(win), _binding(win).widget
    seen = {}

    def on_early(result):  # connected after the binding: the panel shows it by now
        seen.setdefault("early", result)
        seen.setdefault("model_then", win.controller.model_info)
        seen.setdefault("summary", panel.summary.text())
        QApplication.processEvents()  # lay the panel out as the event loop would next
        win.grab().save(str(artifacts_dir / "startup_early_prediction.png"))

    def on_loaded(_info):  # after the bindings' handlers: the early result is still shown
        seen["at_load"] = panel._result

    win.controller.early_prediction.connect(on_early)
    win.controller.model_loaded.connect(on_loaded)
    _start(win, ModelSpec("bundled", device="cpu"))
    qtbot.waitUntil(lambda: panel._result is not None and binding.early is None
                    and not win.controller.busy, timeout=120_000)
    early, final = seen["early"], panel._result
    # Shown before the model was loaded, marked as computed outside TransformerLens.
    assert seen["model_then"] is None
    assert "while TransformerLens loads" in seen["summary"]
    assert seen["at_load"] is early  # never cleared in between
    # TransformerLens's result replaced it, and nothing on screen moved.
    assert final is not early and final is win.controller.last_prompt_result
    assert "TransformerLens loads" not in panel.summary.text()
    assert early.str_tokens == final.str_tokens and early.top_tokens == final.top_tokens
    np.testing.assert_array_equal(early.top_ids, final.top_ids)
    np.testing.assert_allclose(early.top_probs, final.top_probs, rtol=0, atol=1e-5)
    np.testing.assert_allclose(early.loss_per_token, final.loss_per_token, rtol=0, atol=1e-4)
    assert [f"{p:.1%}" for p in early.top_probs[-1]] == [f"{p:.1%}" for p in final.top_probs[-1]]
    assert final.top_tokens[-1][0] == " Mary"
    win.grab().save(str(artifacts_dir / "startup_transformer_lens_prediction.png"))


def test_failed_load_takes_the_early_prediction_back_and_says_why(qtbot, bare_window):
    """The checkpoint can be read, but the load fails (no such device): the user sees why, as
    without an early prediction, and no numbers are left on screen."""
    import torch

    from engine.model_sources import ModelSpec

    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS: the load would succeed")
    win = bare_window
    binding, panel = _binding(win), _binding(win).widget
    early = []
    win.controller.early_prediction.connect(early.append)
    _start(win, ModelSpec("bundled", device="mps"))
    qtbot.waitUntil(lambda: not win.controller.busy and win.errors.box is not None,
                    timeout=120_000)
    assert early[0] is not None and early[-1] is None  # shown, then taken back
    assert "'mps' is not available" in win.errors.box.text()
    assert panel._result is None and binding.early is None
    assert "No model is loaded" in panel.summary.text()
    assert "'mps' is not available" in panel.summary.text()
    assert win.controller.model_info is None
    assert "No model is loaded" in win.prompt_editor.message.text()


def test_another_load_takes_the_early_prediction_back_at_once(qtbot, bare_window,
                                                              tiny_gpt2_dir):
    from engine.model_sources import ModelSpec

    win = bare_window
    binding, panel = _binding(win), _binding(win).widget
    with qtbot.waitSignal(win.controller.early_prediction, timeout=60_000):
        _start(win, ModelSpec("bundled", device="cpu"))
    assert panel._result is not None and panel._result is binding.early
    win.load_model(ModelSpec("folder", str(tiny_gpt2_dir), "cpu"))
    assert panel._result is None and binding.early is None  # the bundled model's numbers
    qtbot.waitUntil(lambda: not win.controller.busy, timeout=120_000)
    assert win.controller.model_info.folder == str(tiny_gpt2_dir)
    # The prompt ran on the model that is loaded now (random: no " Mary").
    result = win.controller.last_prompt_result
    assert result is not None and panel._result is result
    assert result.top_tokens[-1][0] != " Mary" or result.top_probs[-1, 0] < 0.5


def test_a_load_after_the_first_one_finished_still_takes_the_early_prediction_back(
        qtbot, bare_window, tiny_gpt2_dir):
    """The early prediction outlives its load (it stays until TransformerLens's result replaces
    it); a second load started in that gap must take it back, not leave the first model's numbers
    under the second model's name. No prompt runs here, so the gap is held open."""
    from engine.model_sources import ModelSpec
    from engine.prompt_result import PromptRequest

    win = bare_window
    binding, panel = _binding(win), _binding(win).widget
    win.prompt_editor.set_prompt(PROMPT)
    with qtbot.waitSignal(win.controller.model_loaded, timeout=120_000):
        win.load_model(ModelSpec("bundled", device="cpu"), preview=PromptRequest(PROMPT, 10))
    assert panel._result is not None and panel._result is binding.early
    with qtbot.waitSignal(win.controller.model_loaded, timeout=120_000):
        win.load_model(ModelSpec("folder", str(tiny_gpt2_dir), "cpu"))
        assert panel._result is None and binding.early is None
    assert panel._result is None
    assert "is loaded" in panel.summary.text()


def test_launch_shows_the_early_prediction_before_transformer_lens_is_imported():
    """``python -m app`` as the bench runs it: the worker answers before it imports torch and
    TransformerLens; TransformerLens's prediction follows."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", LENSBENCH_STARTUP_TRACE="1")
    out = subprocess.run([sys.executable, "-m", "app", "--prompt", PROMPT], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    events = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("startup ")]
    assert events[:3] == ["window", "early", "imports"] or \
        events[:4] == ["window", "early", "prediction", "imports"], out.stdout + out.stderr
    assert events.index("prediction") < events.index("model") < events.index("tl_prediction")
    assert events[-1] == "tl_prediction" and out.returncode == 0
