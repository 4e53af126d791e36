"""Build the app bundle with tools/build_installer.sh and check what it makes (slow: minutes).

Not part of the default test run (it takes 5-20 minutes of CPU); run it with

    LENSBENCH_BUILD_TEST=1 ./lensbench.sh test tests/installer/test_frozen_bundle.py

The build script itself runs the built app's --self-test with no network, no Python on PATH,
from a read-only folder whose path has spaces, and fails if the app wrote inside its bundle.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tools.installer.bundle_report import elf_version_needs, version_key

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("LENSBENCH_BUILD_TEST") != "1",
                       reason="builds the app bundle (minutes): set LENSBENCH_BUILD_TEST=1"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux build"),
]


def _glibc_of(path: Path) -> tuple[int, ...]:
    needs = elf_version_needs(path) or {}
    found = [v for vs in needs.values() for v in vs if v.startswith("GLIBC_2")]
    return max((version_key(v) for v in found), default=(0,))


def test_build_check_and_pack(tmp_path):
    dist = tmp_path / "dist"
    proc = subprocess.run(["bash", str(ROOT / "tools" / "build_installer.sh"), "--python",
                           sys.executable, "--dist", str(dist)], cwd=ROOT, capture_output=True,
                          text=True, timeout=3 * 3600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "self-test passed" in proc.stdout
    report = json.loads((dist / "build-report.json").read_text())
    assert report["forbidden"] == []
    assert report["bytes"] < 700 * 2**20, report["bytes"] / 2**20
    assert report["archive_bytes"] < 250 * 2**20, report["archive_bytes"] / 2**20
    # No bundled library needs a newer glibc than Python and Qt themselves do.
    import PySide6

    libpython = Path(sysconfig.get_config_var("LIBDIR")) / sysconfig.get_config_var("LDLIBRARY")
    floor = max(_glibc_of(libpython.resolve()),
                _glibc_of(Path(PySide6.__file__).parent / "Qt" / "lib" / "libQt6Core.so.6"))
    assert version_key(report["max_glibc"]) <= floor

    # A lesson opens from inside the frozen bundle (here: as a command-line session + PNG).
    bundle = dist / "Lensbench"
    lesson = bundle / "_internal" / "resources" / "lessons" / "03-ioi-patching" / \
        "session.lensbench"
    shot = tmp_path / "lesson.png"
    env = {"HOME": str(tmp_path / "home"), "PATH": "/nonexistent", "QT_QPA_PLATFORM": "offscreen"}
    run = subprocess.run([str(bundle / "lensbench"), str(lesson), "--screenshot", str(shot),
                          "--size", "1366x768"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if shutil.which("xvfb-run"):  # on X11, through the bundled xcb libraries
        x11 = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1366x768x24", "sh", "-c",
                              f'env -i HOME="{tmp_path}/home" PATH=/nonexistent '
                              f'DISPLAY="$DISPLAY" XAUTHORITY="$XAUTHORITY" '
                              f'"{bundle}/lensbench" --screenshot "{tmp_path}/x11.png"'],
                             capture_output=True, text=True, timeout=600)
        assert x11.returncode == 0, x11.stderr[-3000:]
        assert "propagateSizeHints" not in x11.stderr  # an offscreen-only message: xcb ran
        assert (tmp_path / "x11.png").stat().st_size > 10_000
    version = subprocess.run([str(bundle / "lensbench"), "--version"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert version.stdout.startswith("Lensbench ") and "[app bundle]" in version.stdout
