"""Closing the window while a job ignores cancellation: the window closes within seconds, and
the still-running worker thread is kept (never destroyed while running, which aborts)."""

from __future__ import annotations

import threading
import time


def test_close_during_a_job_that_never_checks_cancel(qtbot, window):
    release, started = threading.Event(), threading.Event()

    def stubborn(host, request, ctx):  # a job with no ctx.check_cancelled() in it
        started.set()
        release.wait(120)
        return "done"

    window.controller.submit("stubborn", stubborn, None)
    qtbot.waitUntil(started.is_set, timeout=20_000)
    t0 = time.monotonic()
    window.close()  # was 30 s of frozen UI, then SIGABRT
    assert time.monotonic() - t0 < 8
    thread = window.controller.thread
    assert thread.isRunning()  # left running, not destroyed
    from app import controller

    assert any(t is thread for t, _w in controller._still_running)
    release.set()
    qtbot.waitUntil(thread.isFinished, timeout=20_000)
