"""Version and document-type metadata for the Windows and macOS bundles (build.spec uses it).

Pure Python, so tests check it on any OS; PyInstaller reads the Windows version resource from the
text ``windows_version_info`` returns (the format of ``pyi-grab_version``).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP_NAME = "Lensbench"
BUNDLE_ID = "org.lensbench.Lensbench"
SESSION_UTI = "org.lensbench.session"
SESSION_MIME = "application/x-lensbench-session"
SESSION_SUFFIX = "lensbench"
COPYRIGHT = "Copyright (c) 2026 the Lensbench authors. MIT licence."
DESCRIPTION = "Lensbench: a workbench for mechanistic interpretability"


def project_version() -> str:
    """The version in pyproject.toml (the single source; app.version reads the same)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not match:
        raise RuntimeError("pyproject.toml has no version")
    return match.group(1)


def version_tuple(version: str) -> tuple[int, int, int, int]:
    parts = [int(p) for p in re.findall(r"\d+", version)[:4]]
    return tuple((parts + [0, 0, 0, 0])[:4])  # type: ignore[return-value]


def windows_version_info(version: str) -> str:
    v = version_tuple(version)
    strings = {
        "CompanyName": "Lensbench",
        "FileDescription": DESCRIPTION,
        "FileVersion": version,
        "InternalName": "lensbench",
        "LegalCopyright": COPYRIGHT,
        "OriginalFilename": "lensbench.exe",
        "ProductName": APP_NAME,
        "ProductVersion": version,
    }
    table = ",\n          ".join(f"StringStruct({k!r}, {s!r})" for k, s in strings.items())
    return f"""VSVersionInfo(
  ffi=FixedFileInfo(filevers={v}, prodvers={v}, mask=0x3f, flags=0x0, OS=0x40004,
                    fileType=0x1, subtype=0x0, date=(0, 0)),
  kids=[
    StringFileInfo([StringTable('040904B0', [
          {table}])]),
    VarFileInfo([VarStruct('Translation', [1033, 1200])])
  ]
)
"""


def macos_info_plist(version: str) -> dict:
    """Info.plist entries: the app's identity and the *.lensbench document type it opens."""
    return {
        "CFBundleName": APP_NAME,
        "CFBundleDisplayName": APP_NAME,
        "CFBundleIdentifier": BUNDLE_ID,
        "CFBundleShortVersionString": version,
        "CFBundleVersion": version,
        "NSHumanReadableCopyright": COPYRIGHT,
        "NSHighResolutionCapable": True,
        "LSMinimumSystemVersion": "11.0",
        "LSApplicationCategoryType": "public.app-category.education",
        "CFBundleDocumentTypes": [{
            "CFBundleTypeName": "Lensbench session",
            "CFBundleTypeRole": "Editor",
            "LSHandlerRank": "Owner",
            "CFBundleTypeIconFile": "lensbench.icns",
            "LSItemContentTypes": [SESSION_UTI],
            "CFBundleTypeExtensions": [SESSION_SUFFIX],
        }],
        "UTExportedTypeDeclarations": [{
            "UTTypeIdentifier": SESSION_UTI,
            "UTTypeDescription": "Lensbench session",
            "UTTypeConformsTo": ["public.data"],
            "UTTypeIconFile": "lensbench.icns",
            "UTTypeTagSpecification": {"public.filename-extension": [SESSION_SUFFIX],
                                       "public.mime-type": SESSION_MIME},
        }],
    }
