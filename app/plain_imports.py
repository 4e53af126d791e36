"""Import torch and TransformerLens without PySide6's import hook (about 25% less CPU).

PySide6 replaces ``builtins.__import__`` with ``__feature_import__``, which runs for every import
statement in the process, to support ``from __feature__ import ...`` (not used here). Importing
torch and TransformerLens through it took 6.7-7.0 s of CPU instead of 4.9-5.6 s. The worker
thread loads models (importing them, and the modules transformers imports lazily while booting)
with Python's own ``__import__``, saved when the ``app`` package was imported (before PySide6); if
PySide6 came first, nothing changes.
"""

from __future__ import annotations

import builtins
from contextlib import contextmanager

import app


@contextmanager
def plain_imports():
    hooked = builtins.__import__
    plain = app.PLAIN_IMPORT
    swap = plain is not hooked
    if swap:
        builtins.__import__ = plain
    try:
        yield
    finally:
        if swap and builtins.__import__ is plain:
            builtins.__import__ = hooked
