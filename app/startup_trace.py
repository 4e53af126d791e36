"""Start-up timing for bench/bench_startup.py (``LENSBENCH_STARTUP_TRACE=1``).

Prints one line per milestone, ``startup <event> <unix time> <CPU seconds so far>``: ``window``
when the main window is first painted, ``early`` when the worker has the prediction from the
checkpoint, ``prediction`` when the first prediction is on screen (that one, or TransformerLens's
where there is none), ``model`` when the model is loaded, ``tl_prediction`` when TransformerLens's
prediction is on screen; then quits. The bench subtracts its own launch time.
"""

from __future__ import annotations

import os
import time

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication


def enabled() -> bool:
    return os.environ.get("LENSBENCH_STARTUP_TRACE", "") not in ("", "0")


def milestone(event: str) -> None:
    """Report ``event`` when tracing (any thread; e.g. the worker's imports done)."""
    if enabled():
        _say(event)


def _say(event: str) -> None:
    """The milestone, the wall-clock time and the CPU seconds this process has used so far."""
    print(f"startup {event} {time.time():.6f} {time.process_time():.3f}", flush=True)


class StartupTrace(QObject):
    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.painted = False
        window.installEventFilter(self)
        window.controller.model_loaded.connect(lambda _info: _say("model"))
        window.controller.model_failed.connect(self._failed)
        # No polling timer: waking the GUI thread every few ms would take the GIL from the worker
        # thread importing torch (that doubled the load time on a busy machine).
        window.controller.job_done.connect(
            lambda channel: QTimer.singleShot(0, self._check_prediction)
            if channel == "predictions" else None)
        window.controller.early_prediction.connect(
            lambda result: QTimer.singleShot(0, self._check_prediction)
            if result is not None else None)
        self.first = False
        self.done = False

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt naming)
        if not self.painted and obj is self.window and event.type() == QEvent.Type.Paint:
            self.painted = True
            _say("window")
        return super().eventFilter(obj, event)

    def _check_prediction(self) -> None:
        binding = next((b for b in self.window.bindings if b.object_name == "predictionsDock"),
                       None)
        if binding is None or binding.widget._result is None or self.done:
            return
        if not self.first:
            self.first = True
            _say("prediction")
        if binding.widget._result is not binding.early:  # TransformerLens's own
            self.done = True
            _say("tl_prediction")
            self.window.lifecycle.mark_clean()  # a measurement run: nothing to save or ask
            self.window.close()
            QApplication.instance().quit()

    def _failed(self, info) -> None:
        _say("failed")
        print(info.message, flush=True)
        self.window.lifecycle.mark_clean()
        self.window.close()
        QApplication.instance().quit()
