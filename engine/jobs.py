"""The job contract shared by every analysis: a context for progress, partial results and cancel.

The worker thread gives each job a context whose cancel flag the UI thread may set at any time;
analyses call ``ctx.check_cancelled()`` between units of work so a cancel lands within a second.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any, Protocol


class Cancelled(Exception):
    """Raised inside a job when its context was cancelled."""


class JobContext(Protocol):
    def progress(self, fraction: float, message: str = "") -> None: ...

    def partial(self, result: Any) -> None: ...

    def check_cancelled(self) -> None: ...


class Context:
    """A thread-safe job context. Notebooks and tests use it directly; the worker subclasses it.

    ``on_progress`` / ``on_partial`` are optional callbacks (the worker wires them to signals).
    """

    def __init__(
        self,
        on_progress: Callable[[float, str], None] | None = None,
        on_partial: Callable[[Any], None] | None = None,
    ) -> None:
        self._cancel = threading.Event()
        self._on_progress = on_progress
        self._on_partial = on_partial
        self.last_progress: tuple[float, str] = (0.0, "")
        self.partials: list[Any] = []

    def progress(self, fraction: float, message: str = "") -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        self.last_progress = (fraction, message)
        if self._on_progress is not None:
            self._on_progress(fraction, message)

    def partial(self, result: Any) -> None:
        if self._on_partial is not None:
            self._on_partial(result)
        else:
            self.partials.append(result)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise Cancelled()


@contextmanager
def cancel_points(model, ctx: JobContext):
    """Check ``ctx`` for cancel as each block of ``model`` starts, while the block is open: one
    long forward pass (a big batch, a long prompt) then stops within one layer of a Cancel
    instead of at its end. The hooks are removed however the block ends."""
    blocks = list(getattr(model, "blocks", []) or [])
    handles = [block.register_forward_pre_hook(lambda _module, _args: ctx.check_cancelled())
               for block in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_job(fn, host, request, ctx: JobContext, grad: bool = False):
    """``fn(host, request, ctx)`` as the app's worker runs it: every forward pass of the model
    checks ``ctx`` for cancel as each block starts, and without autograd unless ``grad``."""
    import torch

    with cancel_points(host.model, ctx):
        if grad:
            return fn(host, request, ctx)
        with torch.inference_mode():
            return fn(host, request, ctx)
