"""Licence texts of everything the bundle ships, gathered at build time (build.spec calls it).

``write_licences(folder, modules, binaries)`` finds the installed distributions that provide the
bundled modules (``importlib.metadata.packages_distributions``) and copies each one's licence
files from its metadata into ``folder/<distribution>-<version>/``; libraries taken from the build
host get their Debian copyright file (``dpkg -S``), and Python its own licence. ``folder/README.md``
lists them all. The hand-written summary of the main components is THIRD_PARTY_NOTICES.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

TEXTS = Path(__file__).resolve().parent / "licences"
# Wheels that ship no licence text: the texts of their licences, kept in tools/installer/licences.
# (PySide6 and shiboken6 are LGPL-3.0-only OR GPL-2.0/3.0; LGPL-3.0 is GPL-3.0 plus permissions.)
EXTRA_TEXTS = {"pyside6-essentials": ("LGPL-3.0.txt", "GPL-3.0.txt"),
               "shiboken6": ("LGPL-3.0.txt", "GPL-3.0.txt")}
LICENCE_FILE = re.compile(r"(^|/)(licen[cs]e|copying|notice|copyright)[^/]*$", re.IGNORECASE)


@dataclass(frozen=True)
class Component:
    name: str
    version: str
    licence: str
    url: str
    files: tuple[str, ...]


def top_level_names(modules, binaries) -> set[str]:
    """Top-level import names of PyInstaller TOC entries (modules by name, binaries by path)."""
    names = {str(m[0]).split(".")[0] for m in modules}
    for dest, *_ in binaries:
        first = str(dest).replace("\\", "/").split("/")[0]
        names.add(first.split(".")[0])
    return {n for n in names if n}


def _licence_of(dist: metadata.Distribution) -> str:
    meta = dist.metadata
    expr = meta.get("License-Expression")
    if expr:
        return expr
    text = (meta.get("License") or "").strip()
    if text and len(text) < 80 and "\n" not in text:
        return text
    classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or []
                   if c.startswith("License ::")]
    return "; ".join(classifiers) or ("see licence files" if text else "unknown")


def _url_of(dist: metadata.Distribution) -> str:
    meta = dist.metadata
    if meta.get("Home-page"):
        return meta["Home-page"]
    for entry in meta.get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip().lower() in ("homepage", "home", "source", "repository", "source code"):
            return url.strip()
    return ""


def distributions_for(names: set[str]) -> list[metadata.Distribution]:
    mapping = metadata.packages_distributions()
    wanted = sorted({d for n in names for d in mapping.get(n, [])}, key=str.lower)
    out = []
    for name in wanted:
        try:
            out.append(metadata.distribution(name))
        except metadata.PackageNotFoundError:
            continue
    return out


def _copy_dist_licences(dist: metadata.Distribution, folder: Path) -> Component:
    name, version = dist.metadata["Name"], dist.version
    target = folder / f"{name}-{version}"
    copied = []
    for f in dist.files or []:
        if LICENCE_FILE.search(str(f)) and not str(f).endswith((".py", ".pyc")):
            src = Path(dist.locate_file(f))
            if src.is_file() and src.stat().st_size < 2_000_000:
                target.mkdir(parents=True, exist_ok=True)
                dest = target / str(f).replace("/", "__")
                shutil.copyfile(src, dest)
                copied.append(dest.name)
    for text in EXTRA_TEXTS.get(re.sub(r"[-_.]+", "-", name).lower(), ()):
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TEXTS / text, target / text)
        copied.append(text)
    return Component(name, version, _licence_of(dist), _url_of(dist), tuple(copied))


def _debian_copyright(library: str) -> tuple[str, Path] | None:
    """(package, copyright file) for a host library, on Debian-based build hosts."""
    if not shutil.which("dpkg"):
        return None
    try:
        out = subprocess.run(["dpkg", "-S", str(Path(library).resolve())], capture_output=True,
                             text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    if ":" not in out:
        return None
    package = out.split(":", 1)[0].strip()
    copyright_file = Path("/usr/share/doc") / package / "copyright"
    return (package, copyright_file) if copyright_file.is_file() else None


def host_libraries(binaries) -> list[tuple[str, str]]:
    """(name in the bundle, source path) of shared libraries that come from the build host."""
    site = {str(Path(p).resolve()) for p in sys.path if "site-packages" in p}
    out = []
    for dest, src, *_ in binaries:
        real = str(Path(src).resolve())
        if any(real.startswith(s) for s in site) or real.startswith(sys.base_prefix):
            continue
        out.append((str(dest), real))
    return out


def write_licences(folder: Path, modules, binaries) -> list[Component]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    components = [_copy_dist_licences(d, folder)
                  for d in distributions_for(top_level_names(modules, binaries))]
    python_licence = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}." \
        f"{sys.version_info.minor}" / "LICENSE.txt"
    if python_licence.is_file():
        target = folder / f"Python-{sys.version.split()[0]}"
        target.mkdir(exist_ok=True)
        shutil.copyfile(python_licence, target / "LICENSE.txt")
        components.append(Component("Python", sys.version.split()[0], "PSF-2.0",
                                    "https://www.python.org", ("LICENSE.txt",)))
    seen = set()
    for dest, src in host_libraries(binaries):
        found = _debian_copyright(src)
        if found is None or found[0] in seen:
            continue
        package, copyright_file = found
        seen.add(package)
        target = folder / f"debian-{package}"
        target.mkdir(exist_ok=True)
        shutil.copyfile(copyright_file, target / "copyright")
        components.append(Component(package, "", "see copyright", f"library {Path(dest).name}",
                                    ("copyright",)))
    lines = ["# Licences of the components in this bundle", "",
             "Generated at build time by tools/installer/notices.py. Each folder holds the "
             "licence files the component ships.", "",
             "| component | version | licence | source |", "|---|---|---|---|"]
    for c in components:
        lines.append(f"| {c.name} | {c.version} | {c.licence} | {c.url} |")
    (folder / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return components
