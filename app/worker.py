"""One worker object in one QThread: it owns the model host and runs one job at a time.

Jobs arrive through a queued signal, so they run in order on the worker thread. Everything that
leaves this thread is plain data: results (numpy dataclasses), ErrorInfo records, floats, strings.

This module imports neither torch nor TransformerLens: the first model load imports them on the
worker thread (about 5 s), so the window is on screen, and responsive, while they load; the start-up
load first answers the prompt from the checkpoint in numpy (``Job.preview``).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot

from app.startup_trace import milestone as trace_milestone
from engine.errors import ErrorInfo, NoModelError, is_out_of_memory
from engine.jobs import Cancelled, Context, run_job


@dataclass
class Job:
    """A unit of work. ``fn(host, request, ctx)``; load jobs have ``kind == 'load'`` and finish
    with the new ModelInfo. A load job's ``preview`` (a PromptRequest) is answered early, as a
    partial result, from the checkpoint itself where engine.early_prediction can (before torch
    is imported); the prompt then runs through TransformerLens as usual."""

    job_id: int
    channel: str
    fn: Callable[..., Any] | None
    request: Any
    kind: str = "analysis"
    grad: bool = False
    ctx: Context = field(default_factory=Context)
    preview: Any = None


class Worker(QObject):
    progress = Signal(int, float, str)  # job_id, fraction 0..1, message
    partial = Signal(int, object)  # job_id, partial result
    finished = Signal(int, object)  # job_id, result
    failed = Signal(int, object)  # job_id, ErrorInfo
    cancelled = Signal(int)  # job_id
    started = Signal(int)  # job_id

    def __init__(self) -> None:
        super().__init__()
        self.host = None  # engine.host.ModelHost once a model is loaded

    @Slot(object)
    def run(self, job: Job) -> None:
        job.ctx._on_progress = lambda f, m: self.progress.emit(job.job_id, f, m)
        job.ctx._on_partial = lambda r: self.partial.emit(job.job_id, r)
        try:
            job.ctx.check_cancelled()  # cancelled while queued: never start it
            self.started.emit(job.job_id)
            if job.kind == "load":
                self._load(job)
                return
            if self.host is None:
                raise NoModelError()
            # Every forward pass of every job checks for Cancel as each block starts, so one
            # long pass (a long prompt, a big batch) stops within a layer of it.
            result = run_job(job.fn, self.host, job.request, job.ctx, job.grad)
            job.ctx.check_cancelled()
            self.finished.emit(job.job_id, result)
        except Cancelled:
            self.cancelled.emit(job.job_id)
        except BaseException as exc:  # every failure becomes a record; the thread lives on
            if is_out_of_memory(exc):
                self._free_memory()
            self.failed.emit(job.job_id, ErrorInfo.from_exception(exc))

    def _load(self, job: Job) -> None:
        from app.plain_imports import plain_imports

        if job.preview is not None:
            with plain_imports():
                self._early_prediction(job)
        if "transformer_lens" not in sys.modules:
            job.ctx.progress(0.01, "Starting PyTorch and TransformerLens…")
        # Booting imports hundreds of transformers modules lazily: all without PySide6's hook.
        with plain_imports():
            from engine.host import load_host

            trace_milestone("imports")
            new_host = load_host(job.request, job.ctx)
        try:
            job.ctx.check_cancelled()
        except Cancelled:
            new_host.close()  # the previous model stays loaded
            raise
        old, self.host = self.host, new_host
        if old is not None:
            old.close()
            self._free_memory()
        self.finished.emit(job.job_id, new_host.info)

    def _early_prediction(self, job: Job) -> None:
        """Numpy only (about 0.1 s): shown while torch and TransformerLens load (seconds)."""
        from engine.early_prediction import early_prediction

        result = early_prediction(job.request, job.preview)
        if result is not None and not job.ctx.cancelled:
            trace_milestone("early")
            job.ctx.partial(result)

    @Slot()
    def shutdown(self) -> None:
        if self.host is not None:
            self.host.close()
            self.host = None
        self._free_memory()

    @staticmethod
    def _free_memory() -> None:
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
