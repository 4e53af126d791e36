"""The command line: argument parsing, and --screenshot end to end in a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.main import parse_args

ROOT = Path(__file__).resolve().parents[2]


def test_parse_args():
    a = parse_args(["--model", "gpt2-small", "--device", "cpu", "--prompt", "hi", "s.lensbench"])
    assert (a.model, a.device, a.prompt, a.session) == ("gpt2-small", "cpu", "hi", "s.lensbench")


def test_screenshot_mode_runs_and_exits(tmp_path, tiny_gpt2_dir):
    out = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp_path / "cfg"),
               XDG_DATA_HOME=str(tmp_path / "data"))
    proc = subprocess.run(
        [sys.executable, "-m", "app", "--model", str(tiny_gpt2_dir), "--device", "cpu",
         "--prompt", "The cat sat on the mat", "--screenshot", str(out), "--size", "1000x700"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1000, 700)
    # a screenshot run leaves the user's layout and autosave alone
    assert not (tmp_path / "cfg" / "Lensbench").exists()
    assert not (tmp_path / "data" / "Lensbench").exists()
