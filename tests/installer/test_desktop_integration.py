"""Desktop integration without building: icons, the Linux install script (.desktop entry, MIME
type, icon), the macOS Info.plist and the Windows version resource, the version, licences."""

from __future__ import annotations

import configparser
import os
import plistlib
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tools.installer import platform_info

ROOT = Path(__file__).resolve().parents[2]
LINUX = ROOT / "tools" / "installer" / "linux"
ICONS = ROOT / "resources" / "icons"


def test_version_is_pyproject_version():
    from app.version import __version__, version_text

    assert __version__ == platform_info.project_version()
    assert version_text().startswith(f"Lensbench {__version__} (torch ")


def test_icons_are_readable_at_every_size(qapp):
    from PySide6.QtGui import QImageReader

    reader = QImageReader(str(ICONS / "lensbench.ico"))
    assert reader.canRead() and reader.imageCount() == 7
    sizes = set()
    for i in range(reader.imageCount()):
        reader.jumpToImage(i)
        sizes.add(reader.read().width())
    assert sizes == {16, 24, 32, 48, 64, 128, 256}
    icns = QImageReader(str(ICONS / "lensbench.icns"))
    assert icns.canRead() and icns.imageCount() >= 7
    png = QImageReader(str(ICONS / "lensbench.png"))
    assert png.size().width() == 256
    from app.desktop import app_icon

    pixmap = app_icon().pixmap(64, 64)
    assert not pixmap.isNull() and pixmap.width() == 64
    assert pixmap.toImage().pixelColor(32, 60).alpha() == 255  # drawn, not transparent


def test_window_icon_and_desktop_file_name(qapp):
    from app.desktop import set_identity

    set_identity(qapp)
    assert not qapp.windowIcon().isNull()
    assert qapp.desktopFileName() == "lensbench"


def _desktop_entry(path: Path) -> configparser.SectionProxy:
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    cp.optionxform = str
    cp.read(path, encoding="utf-8")
    return cp["Desktop Entry"]


def test_desktop_entry_and_mime_type():
    entry = _desktop_entry(LINUX / "lensbench.desktop")
    assert entry["Type"] == "Application" and entry["Icon"] == "lensbench"
    assert entry["MimeType"] == platform_info.SESSION_MIME + ";"
    assert "%f" in entry["Exec"]
    ns = {"m": "http://www.freedesktop.org/standards/shared-mime-info"}
    mime = ET.parse(LINUX / "lensbench-mime.xml").getroot().find("m:mime-type", ns)
    assert mime.get("type") == platform_info.SESSION_MIME
    assert mime.find("m:glob", ns).get("pattern") == "*.lensbench"
    if shutil.which("desktop-file-validate"):
        subprocess.run(["desktop-file-validate", str(LINUX / "lensbench.desktop")], check=True)


def _fake_bundle(folder: Path) -> Path:
    """A folder laid out like dist/Lensbench (the real executable is not needed here)."""
    (folder / "share").mkdir(parents=True)
    exe = folder / "lensbench"
    exe.write_text("#!/bin/sh\necho lensbench \"$@\"\n")
    exe.chmod(0o755)
    for name in ("install.sh", "uninstall.sh"):
        shutil.copy(LINUX / name, folder / name)
    for src in (LINUX / "lensbench.desktop", LINUX / "lensbench-mime.xml",
                ICONS / "lensbench.svg", ICONS / "lensbench.png"):
        shutil.copy(src, folder / "share" / src.name)
    return folder


def test_install_and_uninstall_for_the_user(tmp_path):
    home = tmp_path / "home dir"
    bundle = _fake_bundle(tmp_path / "unpacked here" / "Lensbench")
    env = dict(os.environ, HOME=str(home), XDG_DATA_HOME=str(home / ".local" / "share"))
    env.pop("LENSBENCH_BIN_DIR", None)
    out = subprocess.run(["sh", str(bundle / "install.sh")], env=env, capture_output=True,
                         text=True, check=True).stdout
    target = home / ".local" / "opt" / "Lensbench"
    assert f"installed in {target}" in out
    assert (target / "lensbench").is_file() and (target / "uninstall.sh").is_file()
    data = home / ".local" / "share"
    entry = _desktop_entry(data / "applications" / "lensbench.desktop")
    assert entry["Exec"] == f'"{target}/lensbench" %f'  # quoted: the path has a space
    assert entry["TryExec"] == f"{target}/lensbench"
    assert (data / "mime" / "packages" / "lensbench.xml").is_file()
    assert (data / "icons" / "hicolor" / "scalable" / "apps" / "lensbench.svg").is_file()
    assert (data / "icons" / "hicolor" / "256x256" / "apps" / "lensbench.png").is_file()
    link = home / ".local" / "bin" / "lensbench"
    assert link.is_symlink() and link.resolve() == (target / "lensbench").resolve()
    if shutil.which("update-mime-database"):  # the cache knows *.lensbench now
        globs = (data / "mime" / "globs2").read_text()
        assert f"{platform_info.SESSION_MIME}:*.lensbench" in globs
    subprocess.run(["sh", str(target / "uninstall.sh")], env=env, check=True,
                   capture_output=True)
    assert not target.exists() and not link.exists()
    assert not (data / "applications" / "lensbench.desktop").exists()
    assert bundle.is_dir()  # the unpacked folder is left alone


def test_install_here_registers_in_place(tmp_path):
    home = tmp_path / "home"
    bundle = _fake_bundle(tmp_path / "Lens bench")
    env = dict(os.environ, HOME=str(home), XDG_DATA_HOME=str(home / "share"))
    subprocess.run(["sh", str(bundle / "install.sh"), "--here"], env=env, check=True,
                   capture_output=True)
    entry = _desktop_entry(home / "share" / "applications" / "lensbench.desktop")
    assert entry["Exec"] == f'"{bundle}/lensbench" %f'
    assert not (home / ".local" / "opt").exists()


def _exec_program(value: str) -> str:
    """The program path of an Exec value, unescaped as the Desktop Entry spec says."""
    import re

    value = re.sub(r"\\(.)", lambda m: {"s": " ", "n": "\n", "t": "\t", "r": "\r"}.get(
        m.group(1), m.group(1)), value)  # string level
    assert value.startswith('"') and value.endswith('" %f'), value
    inner = value[1:-len('" %f')]
    return re.sub(r"\\([\"`$\\])", r"\1", inner).replace("%%", "%")


def test_install_quotes_any_path_in_the_desktop_entry(tmp_path):
    home = tmp_path / "home"
    bundle = _fake_bundle(tmp_path / 'R&D "lab" 100% $HOME \\ |x' / "Lensbench")
    env = dict(os.environ, HOME=str(home), XDG_DATA_HOME=str(home / "share"))
    subprocess.run(["sh", str(bundle / "install.sh"), "--here"], env=env, check=True,
                   capture_output=True)
    entry = _desktop_entry(home / "share" / "applications" / "lensbench.desktop")
    assert _exec_program(entry["Exec"]) == f"{bundle}/lensbench"
    assert entry["TryExec"] == f"{bundle}/lensbench"


def test_install_refuses_outside_a_bundle(tmp_path):
    shutil.copy(LINUX / "install.sh", tmp_path / "install.sh")
    proc = subprocess.run(["sh", str(tmp_path / "install.sh")], capture_output=True, text=True,
                          env=dict(os.environ, HOME=str(tmp_path)))
    assert proc.returncode == 1 and "unpacked Lensbench folder" in proc.stderr


def test_macos_info_plist_declares_the_session_type():
    plist = platform_info.macos_info_plist("1.2.3")
    plistlib.dumps(plist)  # what PyInstaller's BUNDLE writes
    doc = plist["CFBundleDocumentTypes"][0]
    assert doc["CFBundleTypeExtensions"] == ["lensbench"]
    assert doc["LSItemContentTypes"] == [platform_info.SESSION_UTI]
    uti = plist["UTExportedTypeDeclarations"][0]
    assert uti["UTTypeTagSpecification"]["public.filename-extension"] == ["lensbench"]
    assert plist["CFBundleShortVersionString"] == "1.2.3"


def test_windows_version_resource():
    """The text PyInstaller evaluates for the version resource, with its constructors."""
    seen = {}

    def record(name):
        def make(*args, **kwargs):
            seen.setdefault(name, []).append((args, kwargs))
            return (name, args, kwargs)
        return make

    names = ("VSVersionInfo", "FixedFileInfo", "StringFileInfo", "StringTable", "StringStruct",
             "VarFileInfo", "VarStruct")
    eval(platform_info.windows_version_info("0.1.0"),  # noqa: S307 - our own generated text
         {"__builtins__": {}}, {n: record(n) for n in names})
    ffi = seen["FixedFileInfo"][0][1]
    assert ffi["filevers"] == (0, 1, 0, 0) and ffi["prodvers"] == (0, 1, 0, 0)
    strings = {a[0]: a[1] for a, _ in seen["StringStruct"]}
    assert strings["ProductVersion"] == "0.1.0" and strings["OriginalFilename"] == "lensbench.exe"


def test_licence_and_notices_ship():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    notices = (ROOT / "THIRD_PARTY_NOTICES.md").read_text()
    for name in ("PySide6", "LGPL-3.0", "PyTorch", "transformers", "TransformerLens"):
        assert name in notices
    assert "GNU LESSER GENERAL PUBLIC LICENSE" in (
        ROOT / "tools" / "installer" / "licences" / "LGPL-3.0.txt").read_text()


def test_licence_texts_are_gathered_for_bundled_packages(tmp_path):
    from tools.installer.notices import write_licences

    modules = [("torch", "", "PYMODULE"), ("PySide6.QtCore", "", "PYMODULE"),
               ("transformer_lens", "", "PYMODULE"), ("numpy", "", "PYMODULE")]
    components = {c.name.lower().replace("_", "-"): c for c in write_licences(tmp_path, modules,
                                                                              [])}
    assert "torch" in components and components["torch"].files
    pyside = components["pyside6-essentials"]
    assert "LGPL-3.0.txt" in pyside.files
    assert (tmp_path / f"PySide6_Essentials-{pyside.version}" / "LGPL-3.0.txt").is_file() or \
        any(p.name == "LGPL-3.0.txt" for p in tmp_path.rglob("*"))
    table = (tmp_path / "README.md").read_text()
    assert "| torch |" in table and "Python" in table


@pytest.mark.parametrize("name", ["install.sh", "uninstall.sh"])
def test_scripts_are_posix_sh(name):
    if shutil.which("dash") is None:
        pytest.skip("no dash to check POSIX syntax")
    subprocess.run(["dash", "-n", str(LINUX / name)], check=True)
