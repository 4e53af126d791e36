"""First run on a plain Linux desktop: missing xcb libraries are named, not a Qt abort (item 9)."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT

LDD = """\tlinux-vdso.so.1 (0x00007ffd)
\tlibQt6XcbQpa.so.6 => /venv/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007f)
\tlibxcb-cursor.so.0 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-icccm.so.4 => not found
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)
"""


def test_missing_sonames_map_to_debian_packages():
    from app.qt_platform import missing_libraries, packages_for

    missing = missing_libraries(LDD)
    assert missing == ["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1"]
    assert packages_for(missing) == ["libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1"]


def test_launcher_names_the_packages_instead_of_aborting(monkeypatch, capsys):
    """With the xcb plugin's libraries missing, main() prints what to install and returns
    before creating a window (Qt would abort with 'could not load the platform plugin')."""
    import app.main_window
    import app.qt_platform as qp
    from app.main import main

    if qp.plugin_path("xcb") is None:
        pytest.skip("PySide6 has no xcb plugin here")
    monkeypatch.setattr(qp.sys, "platform", "linux")
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(qp, "ldd_output", lambda path: LDD)

    def no_window(*a, **k):
        raise AssertionError("a window was built although Qt cannot start")

    monkeypatch.setattr(app.main_window, "MainWindow", no_window)
    assert main(["--model", "bundled"]) == 3
    err = capsys.readouterr().err
    assert "libxcb-cursor.so.0" in err
    assert "sudo apt-get install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1" in err


def test_complete_libraries_or_other_platforms_pass(monkeypatch):
    import app.qt_platform as qp

    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    monkeypatch.setattr(qp, "ldd_output", lambda path: LDD)
    assert qp.check() == ""  # offscreen needs no X11 libraries
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.setattr(qp, "ldd_output", lambda path: "\tlibc.so.6 => /lib/libc.so.6 (0x1)\n")
    assert qp.check() == ""


def test_readme_lists_the_system_packages():
    from app.qt_platform import XCB_PACKAGES

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "sudo apt-get install " + " ".join(XCB_PACKAGES) in readme
