"""engine/ never imports Qt; widgets/ never imports torch, TransformerLens or the engine."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(folder: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = names
    return out


def test_engine_never_imports_qt():
    offenders = {f: n & {"PySide6", "PyQt5", "PyQt6", "shiboken6", "pyqtgraph", "app", "widgets"}
                 for f, n in imported_modules(ROOT / "engine").items()}
    assert not {f: n for f, n in offenders.items() if n}


def test_widgets_never_touch_torch():
    offenders = {f: n & {"torch", "transformer_lens", "transformers", "engine", "safetensors"}
                 for f, n in imported_modules(ROOT / "widgets").items()}
    assert not {f: n for f, n in offenders.items() if n}


def test_the_checker_sees_imports(tmp_path):
    (tmp_path / "m.py").write_text("import PySide6.QtCore\nfrom torch import nn\n")
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        assert imported_modules(tmp_path) == {"m.py": {"PySide6", "torch"}}
    finally:
        ROOT = old
