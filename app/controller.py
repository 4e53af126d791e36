"""Turns panel intents into jobs for the one worker thread, and drops stale results.

Each panel submits on its own *channel*; a newer job on a channel cancels the older one, and only
the newest job's result is delivered. The shared Selection lives here so panels stay linked.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from app.selection import Selection
from app.worker import Job, Worker
from engine.errors import ErrorInfo
from engine.model_sources import ModelSpec


@dataclass
class _Handlers:
    on_result: Callable[[Any], None] | None
    on_partial: Callable[[Any], None] | None
    on_error: Callable[[ErrorInfo], bool] | None
    on_cancel: Callable[[], None] | None


class Controller(QObject):
    _submit = Signal(object)  # queued to the worker thread

    busy_changed = Signal(bool)
    job_progress = Signal(str, float, str)  # channel, fraction, message
    job_started = Signal(str)  # channel
    job_done = Signal(str)  # channel (finished, failed or cancelled)
    error = Signal(str, object)  # channel, ErrorInfo not handled by the submitter
    job_result = Signal(str, object)  # channel, a result just delivered (lesson checks read it)
    model_loaded = Signal(object)  # ModelInfo
    model_loading = Signal(object)  # ModelSpec
    # A load failed (ErrorInfo). ``model_info`` says whether a previous model is still loaded;
    # panels with no model then say why instead of waiting for one.
    model_failed = Signal(object)
    prompt_run = Signal(str, bool)  # prompt, truncate: every panel recomputes for this prompt
    # Show attention on an explicit token sequence (e.g. the induction scanner's repeated random
    # tokens): token ids (list[int]), a label for the UI. The attention panel listens.
    inspect_tokens = Signal(object, str)
    bos_changed = Signal(object)  # the user's BOS choice: True, False, or None (model default)
    # The start-up load's prompt answered from the checkpoint before TransformerLens is ready
    # (engine.early_prediction): a PromptResult; None withdraws it (that load failed or was
    # cancelled). The prompt runs through TransformerLens once the model is loaded.
    early_prediction = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.selection = Selection()
        self.model_info = None
        # The spec of the model the worker holds: it changes only when a load succeeds, so a
        # refused or failed load never becomes what a session saves.
        self.loaded_spec: ModelSpec | None = None
        self.load_error: ErrorInfo | None = None  # why the last load failed, while none is loaded
        self.last_prompt_result = None
        # One BOS policy for every panel: None follows the loaded model's default; True/False is
        # the user's choice, written into every request that leaves it open.
        self.prepend_bos: bool | None = None
        self._ids = itertools.count(1)
        self._jobs: dict[int, Job] = {}
        self._handlers: dict[int, _Handlers] = {}
        self._newest: dict[str, int] = {}
        self._thread = QThread()
        self._thread.setObjectName("lensbench-worker")
        self._worker = Worker()
        self._worker.moveToThread(self._thread)
        self._submit.connect(self._worker.run)
        self._worker.started.connect(self._on_started)
        self._worker.progress.connect(self._on_progress)
        self._worker.partial.connect(self._on_partial)
        self._worker.finished.connect(self._on_finished)
        self._worker.failed.connect(self._on_failed)
        self._worker.cancelled.connect(self._on_cancelled)
        self._thread.start()
        self._closed = False
        self._early_shown = False  # the current load's early prediction was delivered

    # -- submitting ---------------------------------------------------------------------------
    def submit(
        self,
        channel: str,
        fn: Callable[..., Any],
        request: Any,
        on_result: Callable[[Any], None] | None = None,
        on_partial: Callable[[Any], None] | None = None,
        on_error: Callable[[ErrorInfo], bool] | None = None,
        on_cancel: Callable[[], None] | None = None,
        grad: bool = False,
        kind: str = "analysis",
        preview: Any = None,
    ) -> int:
        """Queue ``fn(host, request, ctx)``; cancel the channel's previous job. Returns the id."""
        if self._closed:
            return -1
        old = self._newest.get(channel)
        if old is not None and old in self._jobs:
            self._jobs[old].ctx.cancel()
        job_id = next(self._ids)
        request = _with_bos(request, self.prepend_bos)
        job = Job(job_id, channel, fn, request, kind=kind, grad=grad, preview=preview)
        self._jobs[job_id] = job
        self._handlers[job_id] = _Handlers(on_result, on_partial, on_error, on_cancel)
        self._newest[channel] = job_id
        self.busy_changed.emit(True)
        self._submit.emit(job)
        return job_id

    def set_prepend_bos(self, value: bool | None) -> None:
        """Prepend a BOS token (True), not (False), or as the model does by default (None)."""
        if value != self.prepend_bos:
            self.prepend_bos = value
            self.bos_changed.emit(value)

    def run_prompt(self, prompt: str, truncate: bool = False) -> None:
        """Make ``prompt`` current and ask every panel to recompute."""
        self.selection.set_prompt(prompt)
        self.prompt_run.emit(prompt, truncate)

    def load_model(self, spec: ModelSpec, on_result=None, on_error=None, preview=None) -> int:
        """Load ``spec``. ``preview``, a PromptRequest, is answered early where the checkpoint
        allows (``early_prediction``), while PyTorch and TransformerLens load."""
        # Loading replaces the host under every panel: stop whatever runs first.
        self.cancel_all()
        self._withdraw_early()  # a previous load's early prediction does not apply any more
        self.model_loading.emit(spec)
        return self.submit("model", None, spec, on_result=on_result, on_error=on_error,
                           kind="load", preview=preview,
                           on_partial=self._on_early if preview is not None else None)

    def _on_early(self, result: Any) -> None:
        self._early_shown = True
        self.early_prediction.emit(result)

    def _withdraw_early(self, job_id: int | None = None) -> None:
        """Take back an early prediction: its load ended without a model (``job_id``, a load
        job that failed or was cancelled), or another load starts (no ``job_id``)."""
        job = self._jobs.get(job_id) if job_id is not None else None
        if self._early_shown and (job_id is None or (job is not None and job.kind == "load")):
            self._early_shown = False
            self.early_prediction.emit(None)

    def cancel(self, channel: str) -> None:
        job_id = self._newest.get(channel)
        if job_id is not None and job_id in self._jobs:
            self._jobs[job_id].ctx.cancel()

    def cancel_all(self) -> None:
        for job in self._jobs.values():
            job.ctx.cancel()

    @property
    def busy(self) -> bool:
        return bool(self._jobs)

    @property
    def loading(self) -> bool:
        """A model load is queued or running (analysis jobs should wait for it)."""
        return any(job.kind == "load" and not job.ctx.cancelled for job in self._jobs.values())

    @property
    def loading_spec(self) -> ModelSpec | None:
        """The spec of the newest load still under way, or None."""
        loads = [j for j in self._jobs.values() if j.kind == "load" and not j.ctx.cancelled]
        return max(loads, key=lambda j: j.job_id).request if loads else None

    def session_spec(self, fallback: ModelSpec) -> ModelSpec:
        """The model a session is about: the one loading, else the one loaded, else
        ``fallback`` (what the window last asked for, when no load ever succeeded)."""
        return self.loading_spec or self.loaded_spec or fallback

    @property
    def thread(self) -> QThread:
        return self._thread

    # -- worker signals -----------------------------------------------------------------------
    def _current(self, job_id: int) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or self._newest.get(job.channel) != job_id:
            return None
        return job

    def _on_started(self, job_id: int) -> None:
        job = self._jobs.get(job_id)
        if job is not None:
            self.job_started.emit(job.channel)

    def _on_progress(self, job_id: int, fraction: float, message: str) -> None:
        job = self._current(job_id)
        if job is not None and not job.ctx.cancelled:
            self.job_progress.emit(job.channel, fraction, message)

    def _on_partial(self, job_id: int, result: Any) -> None:
        job = self._current(job_id)
        handlers = self._handlers.get(job_id)
        if job is not None and handlers and handlers.on_partial and not job.ctx.cancelled:
            handlers.on_partial(result)

    def _on_finished(self, job_id: int, result: Any) -> None:
        job, handlers = self._current(job_id), self._handlers.get(job_id)
        loaded = self._jobs.get(job_id)
        if loaded is not None and loaded.kind == "load":
            # The worker has swapped its host whatever the staleness: announce before retiring,
            # so "not busy" always means the new model is known to every panel.
            self.model_info = result
            self.loaded_spec = loaded.request if isinstance(loaded.request, ModelSpec) else None
            self.load_error = None
            # _early_shown stays set: the early prediction may still be on screen until
            # TransformerLens's result replaces it, and another load must take it back.
            self.last_prompt_result = None  # the previous model's
            self.prepend_bos = None  # a new model: its own BOS default again
            self.model_loaded.emit(result)
        self._retire(job_id)
        if job is not None and not job.ctx.cancelled:
            if handlers and handlers.on_result:
                handlers.on_result(result)
            self.job_result.emit(job.channel, result)

    def _on_failed(self, job_id: int, info: ErrorInfo) -> None:
        job, handlers = self._current(job_id), self._handlers.get(job_id)
        self._withdraw_early(job_id)
        failed = self._jobs.get(job_id)

        def announce() -> None:  # after the job is gone (not "loading"), before "not busy"
            if failed is not None and failed.kind == "load":
                if self.model_info is None:
                    self.load_error = info
                self.model_failed.emit(info)

        self._retire(job_id, announce)
        if job is None:
            return
        if handlers and handlers.on_error and handlers.on_error(info):
            return
        if info.kind == "no_model":
            return  # a consequence of a failed load, which has been reported; never hide it
        self.error.emit(job.channel, info)

    def _on_cancelled(self, job_id: int) -> None:
        job, handlers = self._current(job_id), self._handlers.get(job_id)
        self._withdraw_early(job_id)
        self._retire(job_id)
        if job is not None and handlers and handlers.on_cancel:
            handlers.on_cancel()

    def _retire(self, job_id: int, announce: Callable[[], None] | None = None) -> None:
        job = self._jobs.pop(job_id, None)
        self._handlers.pop(job_id, None)
        if announce is not None:
            announce()
        if job is not None:
            self.job_done.emit(job.channel)
        if not self._jobs:
            self.busy_changed.emit(False)

    # -- shutdown -----------------------------------------------------------------------------
    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Cancel everything, free the model on its own thread, stop the thread. True if joined.

        A job that does not check for cancellation can run for minutes: after ``timeout_ms``
        the window closes anyway. The running QThread is then kept alive (never destroyed while
        running, which aborts the process) until it ends; ``lensbench`` leaves with os._exit
        (app.main.run), so it does not hold the process either."""
        if self._closed:
            return self._thread.isFinished()
        self._closed = True
        self.cancel_all()
        from PySide6.QtCore import QMetaObject, Qt

        QMetaObject.invokeMethod(self._worker, "shutdown", Qt.ConnectionType.QueuedConnection)
        self._thread.quit()
        if self._thread.wait(timeout_ms):
            return True
        _still_running.append((self._thread, self._worker))  # never released: see above
        return False


# Worker threads still busy when their window closed, with their workers: referenced here so
# neither is destroyed while the thread runs.
_still_running: list[tuple[QThread, Worker]] = []


def _with_bos(request: Any, prepend_bos: bool | None) -> Any:
    """``request`` with the user's BOS choice where it has a ``prepend_bos`` field left open."""
    import dataclasses

    if prepend_bos is None or not dataclasses.is_dataclass(request) or isinstance(request, type):
        return request
    names = {f.name for f in dataclasses.fields(request)}
    if "prepend_bos" not in names or request.prepend_bos is not None:
        return request
    return dataclasses.replace(request, prepend_bos=prepend_bos)
