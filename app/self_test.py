"""``lensbench --self-test``: does this installation work? (frozen or not, offscreen, offline)

It builds the main window offscreen, loads the bundled model organism on the CPU, runs each
panel's analysis once through the app's worker thread and checks values known for the shipped
model, saves a session into a temporary folder and opens it again, and reads every lesson. Settings
and autosave go to a temporary profile and the window is told not to persist anything, so the
user's own settings, autosave and Hugging Face cache are never touched (checked at the end).

Prints one line and exits 0 when everything holds; otherwise one line with the first failure and
exits 1 (the traceback, if any, goes to stderr).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

JOB_TIMEOUT_MS = 300_000
IOI_CLEAN = "When John and Mary went to the store, John gave a drink to"
IOI_CORRUPTED = "When John and Mary went to the store, Mary gave a drink to"


class SelfTestFailure(Exception):
    """A check that did not hold; the message says which and what was measured."""


def user_profile_paths() -> list[Path]:
    """Where Lensbench keeps the user's settings and autosave on this platform."""
    home = Path.home()
    if sys.platform == "darwin":
        return [home / "Library" / "Preferences" / "com.lensbench.Lensbench.plist",
                home / "Library" / "Application Support" / "Lensbench"]
    if sys.platform == "win32":
        appdata = Path(os.environ.get("APPDATA", home / "AppData" / "Roaming"))
        return [appdata / "Lensbench"]
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    data = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return [config / "Lensbench", data / "Lensbench"]


def snapshot(paths: list[Path]) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``paths``: enough to see a write."""
    out = {}
    for root in paths:
        files = [root] if root.is_file() else (root.rglob("*") if root.is_dir() else [])
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            if f.is_file():
                out[str(f)] = (st.st_size, st.st_mtime_ns)
    return out


def isolate(tmp: Path) -> None:
    """Point every per-user location this process could write to into ``tmp``."""
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"),
                     ("XDG_CACHE_HOME", "cache"), ("XDG_STATE_HOME", "state"),
                     ("HF_HOME", "hf")):
        os.environ[var] = str(tmp / sub)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["QT_QPA_PLATFORM"] = "offscreen"


def _quiet_qt_messages() -> None:
    """The offscreen platform warns that it cannot resize windows to their size hints; that is
    expected here and not a failure. Other Qt messages still go to stderr."""
    from PySide6.QtCore import qInstallMessageHandler

    def handler(_kind, _context, message: str) -> None:
        if "propagateSizeHints" not in message:
            sys.stderr.write(message + "\n")

    qInstallMessageHandler(handler)


class Runner:
    """Runs jobs on the window's worker thread and waits for them (a local event loop)."""

    def __init__(self, window) -> None:
        self.window = window
        self.controller = window.controller

    def wait(self, start: Callable[[Callable, Callable], int], what: str):
        from PySide6.QtCore import QEventLoop, QTimer

        loop = QEventLoop()
        box: dict = {}

        def done(result) -> None:
            box["result"] = result
            loop.quit()

        def failed(info) -> bool:
            box["error"] = f"{info.message} {info.hint}".strip()
            loop.quit()
            return True

        start(done, failed)
        QTimer.singleShot(JOB_TIMEOUT_MS, loop.quit)
        if not box:
            loop.exec()
        if "error" in box:
            raise SelfTestFailure(f"{what}: {box['error']}")
        if "result" not in box:
            raise SelfTestFailure(f"{what}: no result within {JOB_TIMEOUT_MS // 1000} s")
        return box["result"]

    def job(self, fn, request, what: str, grad: bool = False):
        return self.wait(lambda ok, err: self.controller.submit(
            "self-test", fn, request, on_result=ok, on_error=err,
            on_cancel=lambda: err(_Cancelled()), grad=grad), what)

    def load_bundled(self):
        from engine.model_sources import ModelSpec

        spec = ModelSpec("bundled", device="cpu")
        self.window.model_spec = spec
        return self.wait(lambda ok, err: self.controller.load_model(spec, on_result=ok,
                                                                    on_error=err),
                         "loading the bundled model")


class _Cancelled:
    message, hint = "the job was cancelled", ""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise SelfTestFailure(message)


def _widget(window, object_name: str):
    for b in window.bindings:
        if b.object_name == object_name:
            return b.widget
    return None


def _show(window, object_name: str, method: str, result) -> None:
    """Draw a result in its panel, as the panel's binding would (exercises the plots)."""
    widget = _widget(window, object_name)
    if widget is not None and hasattr(widget, method):
        getattr(widget, method)(result)


def run_checks(window, tmp: Path) -> list[str]:
    """Every check, in order; returns their names. Raises SelfTestFailure at the first miss."""
    import numpy as np

    from app.panels import PANELS
    from engine.attention import AttentionRequest, run_attention
    from engine.attribution import AttributionRequest, run_attribution
    from engine.induction import (
        AblationRequest,
        InductionRequest,
        run_induction_ablation,
        run_induction_scan,
    )
    from engine.patching import PromptPair, SweepRequest, run_sweep
    from engine.prompt import PromptRequest, run_prompt

    run = Runner(window)
    done: list[str] = []

    expect(len(window.docks) == len(PANELS), f"window: {len(window.docks)} panels docked, "
                                             f"expected {len(PANELS)}")
    done.append("window")

    info = run.load_bundled()
    expect((info.n_layers, info.n_heads, info.d_vocab) == (4, 4, 3192),
           f"model: the bundled organism has {info.n_layers} layers, {info.n_heads} heads, "
           f"{info.d_vocab} tokens; expected 4, 4, 3192")
    done.append("model")

    r = run.job(run_prompt, PromptRequest("The Eiffel Tower is in"), "predictions")
    _show(window, "predictionsDock", "set_result", r)
    expect(r.top_tokens[-1][0] == " Paris" and r.top_probs[-1, 0] > 0.5,
           f"predictions: top prediction after 'The Eiffel Tower is in' is "
           f"{r.top_tokens[-1][0]!r} (p={r.top_probs[-1, 0]:.2f}); expected ' Paris', p > 0.5")
    done.append("predictions")

    text = "The cat sat on the mat. The cat sat on the mat."
    at = run.job(run_attention, AttentionRequest(prompts=(text,)), "attention")
    _show(window, "attentionDock", "set_result", at)
    p = at.items[0].patterns  # [layer, head, q, k]
    rows = p.sum(-1)
    expect(np.allclose(rows, 1.0, atol=1e-4), "attention: pattern rows do not sum to 1")
    prev = float(np.mean([p[0, 0, q, q - 1] for q in range(1, p.shape[-1])]))
    expect(prev > 0.8, f"attention: L0H0 puts {prev:.2f} of its attention on the previous "
                       "token; expected > 0.8")
    done.append("attention")

    a = run.job(run_attribution, AttributionRequest.single("The Eiffel Tower is in", " Paris"),
                "attribution")
    _show(window, "attributionDock", "set_result", a)
    total = float(a.component_values[0].sum() + a.bias_values[0])
    expect(abs(total - float(a.final_values[0])) < 1e-3 * max(1.0, abs(total)),
           f"attribution: components sum to {total:.4f}, the logit is {a.final_values[0]:.4f}")
    expect(int(a.lens_ranks[0, -1]) == 0 and int(a.lens_ranks[0, 0]) > 50,
           f"attribution: ' Paris' ranks {a.lens_ranks[0, 0]} after the embeddings and "
           f"{a.lens_ranks[0, -1]} at the end; expected > 50 and 0")
    done.append("attribution")

    scan = run.job(run_induction_scan, InductionRequest(seq_len=30, batch=4), "induction scan")
    _show(window, "inductionDock", "set_result", scan)
    ind, prv = scan.repeated["induction"], scan.repeated["previous"]
    expect(ind[1, 1] > 0.9 and prv[0, 0] > 0.9,
           f"induction: L1H1 induction score {ind[1, 1]:.2f}, L0H0 previous-token score "
           f"{prv[0, 0]:.2f}; expected both > 0.9")
    expect(scan.second_half_loss < 1.0 < scan.first_half_loss,
           f"induction: loss {scan.first_half_loss:.2f} on the first copy, "
           f"{scan.second_half_loss:.2f} on the repeat; expected the repeat below 1 nat")
    done.append("induction")

    ab = run.job(run_induction_ablation, AblationRequest(heads=((1, 1), (3, 1)), seq_len=30,
                                                         batch=4, control_sets=1),
                 "induction ablation")
    expect(ab.ablated_rise > 3.0, f"ablation: knocking out L1H1 and L3H1 raised the loss by "
                                  f"{ab.ablated_rise:.2f} nats; expected > 3")
    done.append("ablation")

    sweep = run.job(run_sweep, SweepRequest((PromptPair(IOI_CLEAN, IOI_CORRUPTED, " Mary",
                                                        " John"),), "head_out"),
                    "patching")
    _show(window, "patchingDock", "set_sweep_result", sweep)
    layer, head = np.unravel_index(int(np.nanargmax(sweep.values)), sweep.values.shape)
    expect((int(layer), int(head)) == (2, 1) and sweep.values[2, 1] > 0.8,
           f"patching: the head whose output restores most of the IOI logit difference is "
           f"L{layer}H{head} ({np.nanmax(sweep.values):.2f}); expected L2H1 > 0.8")
    done.append("patching")

    window.grab()  # paint every panel once with its result
    done.append("drawing")

    _check_session(window, tmp)
    done.append("session")

    _check_lessons(window)
    done.append("lessons")
    return done


def _check_session(window, tmp: Path) -> None:
    from app.session_actions import manifest_of, open_path
    from app.session_io import load_session, save_session

    path = tmp / "self test session.lensbench"
    window.prompt_editor.set_prompt("The Colosseum is in")
    save_session(path, manifest_of(window))
    manifest, _arrays = load_session(path)
    expect(manifest.get("prompt") == "The Colosseum is in",
           f"session: reopened prompt is {manifest.get('prompt')!r}")
    window.prompt_editor.set_prompt("something else")
    expect(open_path(window, str(path)) and window.prompt_editor.prompt() ==
           "The Colosseum is in", "session: opening the saved session did not restore it")
    window.controller.cancel_all()


def _check_lessons(window) -> None:
    """Every lesson file and its session read; the Lessons panel has them all."""
    from app.lesson_catalog import load_lessons
    from app.session_io import load_session

    lessons = load_lessons()
    expect(len(lessons) >= 4, f"lessons: {len(lessons)} found, expected at least 4")
    for lesson in lessons:
        load_session(lesson.session_path)
    panel = window.lessons
    expect(not panel.load_error and panel.widget.picker.count() == len(lessons),
           f"lessons: the Lessons panel lists {panel.widget.picker.count()} "
           f"({panel.load_error or 'no error'})")


def run_self_test() -> int:
    from app.version import __version__, frozen

    started = time.perf_counter()
    profile = user_profile_paths()  # before isolate() points the variables elsewhere
    before = snapshot(profile)
    with tempfile.TemporaryDirectory(prefix="lensbench-self-test-") as name:
        tmp = Path(name)
        isolate(tmp)
        window = None
        try:
            from PySide6.QtWidgets import QApplication

            app = QApplication.instance()
            if app is None:
                _quiet_qt_messages()
                app = QApplication(sys.argv[:1])
            from app.desktop import set_identity
            from app.main_window import MainWindow

            set_identity(app)
            window = MainWindow(restore_layout=False, persist=False)
            window.resize(1366, 768)
            window.show()
            checks = run_checks(window, tmp)
        except SelfTestFailure as exc:
            print(f"Lensbench {__version__} self-test FAILED: {exc}", flush=True)
            return 1
        except Exception as exc:  # anything unexpected is a failure with its traceback
            traceback.print_exc()
            print(f"Lensbench {__version__} self-test FAILED: {type(exc).__name__}: {exc}",
                  flush=True)
            return 1
        finally:
            if window is not None:
                window.close()
                window.controller.shutdown()
                window.deleteLater()
                QApplication.processEvents()
                window = None
    if snapshot(profile) != before:
        print(f"Lensbench {__version__} self-test FAILED: the user's settings or autosave "
              "changed during the test", flush=True)
        return 1
    checks.append("profile untouched")
    where = "app bundle" if frozen() else "source"
    print(f"Lensbench {__version__} self-test passed: {len(checks)} checks "
          f"({', '.join(checks)}) in {time.perf_counter() - started:.1f} s "
          f"[bundled model, cpu, {where}]", flush=True)
    return 0
