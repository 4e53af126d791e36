"""Before Qt starts: are the system libraries its X11 platform plugin needs installed?

On a plain Linux desktop PySide6's ``libqxcb.so`` may miss ``libxcb-cursor0`` and a few other
xcb libraries; Qt then aborts with "Could not load the Qt platform plugin xcb", which does not say
what to install. This module runs ``ldd`` on the plugin (no Qt import, a few ms) and names the
Debian/Ubuntu packages, so the launcher can say so instead of crashing. If the desktop is a Wayland
session whose plugin is complete, Qt is pointed at Wayland instead.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# shared-library name -> Debian/Ubuntu package (bookworm / 22.04; Ubuntu 24.04 renames glib's)
PACKAGES = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb.so.1": "libxcb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libXau.so.6": "libxau6",
    "libXdmcp.so.6": "libxdmcp6",
    "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6",
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libGLX.so.0": "libglx0",
    "libGLdispatch.so.0": "libglvnd0",
    "libOpenGL.so.0": "libopengl0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libwayland-client.so.0": "libwayland-client0",
    "libwayland-cursor.so.0": "libwayland-cursor0",
    "libwayland-egl.so.1": "libwayland-egl1",
}
# Everything the xcb plugin of PySide6 6.x links against beyond a base system; the README lists it.
XCB_PACKAGES = ("libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1", "libxcb-image0",
                "libxcb-render-util0", "libxcb-randr0", "libxcb-shape0", "libxcb-xkb1",
                "libxkbcommon-x11-0", "libegl1", "libgl1", "libfontconfig1", "libdbus-1-3")


def plugin_path(name: str) -> Path | None:
    """PySide6's platform plugin ``name`` (e.g. "xcb"), located without importing PySide6."""
    spec = importlib.util.find_spec("PySide6")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "Qt" / "plugins" / "platforms" / f"libq{name}.so"
        if path.is_file():
            return path
    return None


def ldd_output(path: Path) -> str:
    """``ldd path`` (empty when ldd is unavailable or fails: then nothing is reported)."""
    exe = shutil.which("ldd")
    if exe is None:
        return ""
    try:
        return subprocess.run([exe, str(path)], capture_output=True, text=True,
                              timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def missing_libraries(ldd_text: str) -> list[str]:
    """Sonames ldd could not find, in order: "libxcb-cursor.so.0 => not found"."""
    out = []
    for line in ldd_text.splitlines():
        m = re.match(r"\s*(\S+)\s+=>\s+not found", line)
        if m and m.group(1) not in out:
            out.append(m.group(1))
    return out


def packages_for(sonames: list[str]) -> list[str]:
    out = []
    for name in sonames:
        package = PACKAGES.get(name, name)
        if package not in out:
            out.append(package)
    return out


def _platform_requested() -> str:
    return (os.environ.get("QT_QPA_PLATFORM") or "").split(":", 1)[0].strip().lower()


def check() -> str:
    """An explanation to print and stop on, or "" when Qt can start (Linux only, xcb only).

    A Wayland session whose plugin has every library switches Qt to Wayland instead.
    """
    if not sys.platform.startswith("linux") or getattr(sys, "frozen", False):
        return ""
    requested = _platform_requested()
    if requested not in ("", "xcb"):
        return ""  # offscreen, wayland, eglfs...: not ours to judge
    xcb = plugin_path("xcb")
    if xcb is None:
        return ""
    missing = missing_libraries(ldd_output(xcb))
    if not missing:
        return ""
    if not requested and os.environ.get("WAYLAND_DISPLAY"):
        wayland = plugin_path("wayland")
        if wayland is not None and not missing_libraries(ldd_output(wayland)):
            os.environ["QT_QPA_PLATFORM"] = "wayland"
            print("lensbench: Qt's X11 libraries are incomplete; using Wayland.", file=sys.stderr)
            return ""
    packages = packages_for(missing)
    return (
        "Lensbench cannot open its window: Qt's X11 platform plugin (xcb) needs system "
        "libraries that are not installed:\n"
        f"    {', '.join(missing)}\n"
        "Install them (Debian/Ubuntu):\n"
        f"    sudo apt-get install {' '.join(packages)}\n"
        "The full list Lensbench needs is in the README (section 'System packages on Linux').\n"
        "Without a display, './lensbench.sh --screenshot out.png' renders offscreen.")
