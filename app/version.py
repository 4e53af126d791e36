"""The app's version (pyproject.toml's, checked by a test) and ``--version``'s text."""

from __future__ import annotations

import platform
import sys

__version__ = "0.1.0"


def frozen() -> bool:
    """True when running from the PyInstaller bundle."""
    return bool(getattr(sys, "frozen", False))


def version_text() -> str:
    """One line: Lensbench's version and the versions of what it runs on."""
    parts = [f"Lensbench {__version__}"]
    libs = []
    try:
        import torch

        libs.append(f"torch {torch.__version__}")
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    try:
        from importlib.metadata import version

        libs.append(f"transformer-lens {version('transformer_lens')}")
    except Exception:
        pass
    try:
        import PySide6

        libs.append(f"PySide6 {PySide6.__version__}")
    except ImportError:  # pragma: no cover
        pass
    libs.append(f"Python {platform.python_version()}")
    parts.append("(" + ", ".join(libs) + ")")
    if frozen():
        parts.append("[app bundle]")
    return " ".join(parts)
