"""Command line: ``lensbench [--model NAME_OR_PATH] [--device D] [--prompt TEXT] [SESSION_FILE]``.

``--screenshot PATH`` starts the app, runs the prompt, saves a PNG of the window and exits; the
README images and GUI tests use it. It never writes the autosave or the saved layout.
``--self-test`` checks an installation (app/self_test.py); ``--version`` prints the versions.
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_PROMPT = "When John and Mary went to the store, John gave a drink to"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lensbench", description="Lensbench: a workbench for "
                                "mechanistic interpretability of transformer language models.")
    p.add_argument("session", nargs="?", help="a .lensbench session file to open")
    p.add_argument("--model", help="HF model name (e.g. gpt2-small) or local model folder; "
                   "default: the bundled model organism")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--prompt", help="prompt to run at start")
    p.add_argument("--screenshot", metavar="PATH", help="run the prompt, save a PNG, and exit")
    p.add_argument("--size", default="1400x900", help="window size for --screenshot (WxH)")
    p.add_argument("--self-test", action="store_true",
                   help="check this installation offscreen (bundled model, every panel's "
                        "analysis, sessions) without touching your settings; exit 0 if it works")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.version:
        from app.version import version_text

        print(version_text())
        return 0
    if args.self_test:
        from app.self_test import run_self_test

        return run_self_test()
    if args.screenshot and not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from app import qt_platform

    problem = qt_platform.check()  # before Qt, which would abort with a misleading message
    if problem:
        print(problem, file=sys.stderr)
        return 3
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from app.desktop import FileOpenFilter, set_identity

    set_identity(app)
    file_opener = FileOpenFilter(app)  # macOS: sessions double-clicked in Finder
    from app.main_window import MainWindow
    from engine.model_sources import ModelSpec

    window = MainWindow(restore_layout=not args.screenshot, persist=not args.screenshot)
    file_opener.set_window(window)
    if args.screenshot:
        w, h = (int(x) for x in args.size.lower().split("x"))
        window.resize(w, h)
    from app import startup_trace

    trace = startup_trace.StartupTrace(window) if startup_trace.enabled() else None
    window.show()
    window.prompt_editor.edit.setFocus()
    # Drawn before the worker thread starts importing torch and TransformerLens (seconds).
    app.processEvents()
    opened = False
    if args.session:
        opened = window.lifecycle.open_file(args.session, ask=False)
        if not opened and window.errors.history:  # shown in the window; said here too
            print(f"lensbench: {window.errors.history[-1][1].message}", file=sys.stderr)
    if not opened:  # no session, or a refused one: start as without it
        from engine.prompt_result import PromptRequest

        prompt = args.prompt if args.prompt is not None else DEFAULT_PROMPT
        top_k = window.prompt_editor.top_k.value()
        # The prompt is answered from the checkpoint (numpy, engine.early_prediction) before
        # torch and TransformerLens are loaded; it then runs through TransformerLens.
        preview = PromptRequest(prompt, top_k) if prompt.strip() else None
        window.load_model(ModelSpec.parse(args.model, args.device, args.dtype), preview=preview)
        window.prompt_editor.set_prompt(prompt)
        window._run_prompt(prompt, top_k, False)
        if args.prompt is None:  # a prompt typed on the command line is work worth keeping
            window.lifecycle.mark_clean(settle=True)
    if args.screenshot:
        from app.screenshot import save_when_idle

        save_when_idle(window, args.screenshot)
    elif trace is None:  # (a timed start-up run measures, it asks nothing)
        from PySide6.QtCore import QTimer

        from app import recovery

        # Once the window is up: offer back the work of instances that crashed.
        QTimer.singleShot(0, lambda: recovery.offer_at_start(window))
    return app.exec()


def run() -> None:
    """The ``lensbench`` command and ``python -m app``: ``main``, then leave without Python's
    teardown. By then the window has saved the session and layout and the worker thread has
    joined (MainWindow.closeEvent); what is left is PySide's atexit pass deleting every
    Python-owned Qt object in no particular order, which now and then crashes (SIGSEGV in
    shiboken's error printing while a pyqtgraph item's Python override runs mid-destruction)
    and would turn a clean exit into a crash report."""
    code = main()
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed or absent (a frozen GUI app)
            pass
    os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    run()
