"""Errors the user can act on, and the plain record that carries any error across threads."""

from __future__ import annotations

import traceback
from dataclasses import dataclass


class LensbenchError(Exception):
    """An error with a message for the user and a hint on what to do about it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class InputError(LensbenchError):
    """Bad user input (empty prompt, multi-token answer, out-of-range index...)."""


class ModelLoadError(LensbenchError):
    """The model could not be loaded (unknown name, offline, corrupt folder...)."""


class NoModelError(ModelLoadError):
    """A job reached the worker while no model is loaded (e.g. the start-up load failed). Its
    cause was already reported with the failed load, so the UI does not report it again."""

    def __init__(self) -> None:
        super().__init__("No model is loaded.", "Load a model first (Model > Load model…).")


class PromptTooLong(InputError):
    """The prompt has more tokens than the model's context; the UI offers truncation."""

    def __init__(self, n_tokens: int, n_ctx: int) -> None:
        super().__init__(
            f"The prompt has {n_tokens} tokens but the model's context is {n_ctx} tokens.",
            f"Shorten the prompt, or truncate it to its last {n_ctx} tokens.",
        )
        self.n_tokens = n_tokens
        self.n_ctx = n_ctx


@dataclass(frozen=True)
class ErrorInfo:
    """An exception as plain data, safe to send between threads and to show or copy."""

    type: str
    message: str
    traceback: str
    hint: str = ""
    kind: str = "error"  # "input", "model", "no_model", "oom", "error"
    n_tokens: int = 0
    n_ctx: int = 0

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if isinstance(exc, PromptTooLong):
            return cls(type(exc).__name__, exc.message, tb, exc.hint, "too_long",
                       exc.n_tokens, exc.n_ctx)
        if isinstance(exc, InputError):
            return cls(type(exc).__name__, exc.message, tb, exc.hint, "input")
        if isinstance(exc, NoModelError):
            return cls(type(exc).__name__, exc.message, tb, exc.hint, "no_model")
        if isinstance(exc, ModelLoadError):
            return cls(type(exc).__name__, exc.message, tb, exc.hint, "model")
        if is_out_of_memory(exc):
            return cls(
                type(exc).__name__,
                "Out of memory while running the job.",
                tb,
                "Memory was freed. Try a shorter prompt or a smaller batch, or reload the model "
                "on the CPU (Model > Load model...).",
                "oom",
            )
        message = str(exc) or type(exc).__name__
        return cls(type(exc).__name__, message, tb, "This looks like a bug; the traceback can be "
                   "copied from the details.", "error")


def is_out_of_memory(exc: BaseException) -> bool:
    name = type(exc).__name__
    return name == "OutOfMemoryError" or (
        isinstance(exc, (RuntimeError, MemoryError)) and "out of memory" in str(exc).lower()
    ) or isinstance(exc, MemoryError)
