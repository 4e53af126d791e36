#!/usr/bin/env bash
# Lensbench launcher: sets up .venv on first use, then starts the app or runs the tests.
#   ./lensbench.sh [app options]     start the app (bundled model by default)
#   ./lensbench.sh test [pytest args] run the test suite (offscreen)
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY=${PYTHON:-python3}
# torch 2.13.0: on Linux from PyPI this is the CUDA build; set LENSBENCH_TORCH to choose another.
TORCH_SPEC=${LENSBENCH_TORCH:-torch==2.13.0}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "lensbench: creating $VENV (first run only)…"
    "$PY" -m venv "$VENV"
  fi
  # Installed? find_spec locates the packages without importing them (importing torch and
  # TransformerLens alone takes seconds, and the app imports them again anyway).
  if ! "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ('torch', 'transformer_lens', 'PySide6', 'pyqtgraph', 'pytest', 'pytestqt')))" 2>/dev/null \
     || [ pyproject.toml -nt "$VENV/.lensbench-installed" ]; then
    echo "lensbench: installing dependencies into $VENV…"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip show torch >/dev/null 2>&1 || "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
    "$VENV/bin/python" -m pip install -q -e ".[test]"
    touch "$VENV/.lensbench-installed"
  fi
}

setup
if [ "${1:-}" = "test" ]; then
  shift
  export QT_QPA_PLATFORM=offscreen
  exec "$VENV/bin/python" -m pytest "$@"
fi
exec "$VENV/bin/python" -m app "$@"
