"""Killing the process while it saves never loses the previous file: a child process saves a
session over an older one and is SIGKILLed in each phase of the save (before writing, half way
through the data, before the commit, after it). The file is then always complete: the old one,
or after the commit the new one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from app.session_io import load_session, save_session
from tests.conftest import ROOT

CHILD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from PySide6.QtCore import QCoreApplication, QSaveFile
    from app.session_io import save_session

    phase, path = sys.argv[1], sys.argv[2]
    app = QCoreApplication([])
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    write, commit = QSaveFile.write, QSaveFile.commit

    def patched_write(self, data):
        if phase == "before-write":
            die()
        if phase == "half-written":
            write(self, bytes(data)[: len(data) // 2])
            self.flush()
            die()
        return write(self, data)

    def patched_commit(self):
        if phase == "before-commit":
            die()
        ok = commit(self)
        if phase == "after-commit":
            die()
        return ok

    QSaveFile.write, QSaveFile.commit = patched_write, patched_commit
    big = np.full((4, 2**20), 2.0, np.float32)  # 16 MiB: the write is not instant
    save_session(path, {"prompt": "new"}, {"x": big})
    print("saved without being killed")
""")


@pytest.mark.parametrize("phase, survivor", [("before-write", "old"), ("half-written", "old"),
                                             ("before-commit", "old"), ("after-commit", "new")])
def test_a_kill_during_save_leaves_a_complete_file(tmp_path, phase, survivor):
    path = tmp_path / "study.lensbench"
    save_session(path, {"prompt": "old"}, {"x": np.ones((3, 5), np.float32)})
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", CHILD, phase, str(path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stdout + out.stderr
    manifest, arrays = load_session(path)
    assert manifest["prompt"] == survivor
    if survivor == "old":
        np.testing.assert_array_equal(arrays["x"], np.ones((3, 5), np.float32))
    else:
        assert arrays["x"].shape == (4, 2**20) and float(arrays["x"].max()) == 2.0
    # Whatever the kill left behind, it is not taken for the session.
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".lensbench") == \
        ["study.lensbench"]


def test_a_kill_during_the_first_save_leaves_no_partial_session(tmp_path):
    path = tmp_path / "new.lensbench"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", CHILD, "half-written", str(path)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stdout + out.stderr
    assert not path.exists()
