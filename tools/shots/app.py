"""Render the README's main screenshot: the real app on the bundled model, offscreen.

.venv/bin/python tools/shots/app.py   ->  docs/images/lensbench.png
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "images" / "lensbench.png"

if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    sys.exit(
        subprocess.call(
            [
                sys.executable,
                "-m",
                "app",
                "--prompt",
                "When John and Mary went to the store, John gave a drink to",
                "--screenshot",
                str(OUT),
                "--size",
                "1366x768",
            ],
            cwd=ROOT,
            env=env,
        )
    )
