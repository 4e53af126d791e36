"""Session files (*.lensbench): a safetensors file whose metadata holds a JSON manifest.

Sessions are data, never code: no pickle, no torch.load, no eval. Reading checks the file size,
the manifest's size and schema, and every array's dtype and shape before using it. Saving is
atomic through QSaveFile, so the previous file survives until the new one is complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSaveFile
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

SCHEMA_VERSION = 1
SUFFIX = ".lensbench"
MAX_FILE_BYTES = 512 * 2**20
MAX_MANIFEST_CHARS = 4 * 2**20
ALLOWED_DTYPES = {np.dtype(t) for t in ("float64", "float32", "float16", "int64", "int32",
                                         "bool")}


class SessionError(Exception):
    """A session file that cannot be read; the message is for the user."""


def save_session(path: str | Path, manifest: dict, arrays: dict[str, np.ndarray] | None = None):
    manifest = dict(manifest, schema_version=SCHEMA_VERSION, app="lensbench")
    arrays = {k: np.ascontiguousarray(v) for k, v in (arrays or {}).items()}
    for k, v in arrays.items():
        if v.dtype not in ALLOWED_DTYPES:
            raise SessionError(f"Array {k!r} has unsupported dtype {v.dtype}.")
    data = st_save(arrays, metadata={"lensbench_manifest": json.dumps(manifest)})
    f = QSaveFile(str(path))
    if not f.open(QSaveFile.OpenModeFlag.WriteOnly):
        raise SessionError(f"Cannot write {path}: {f.errorString()}")
    f.write(data)
    if not f.commit():
        raise SessionError(f"Saving {path} failed: {f.errorString()}; the old file is intact.")


def _read_header(raw: bytes) -> dict:
    if len(raw) < 8:
        raise SessionError("The file is too short to be a Lensbench session.")
    n = int.from_bytes(raw[:8], "little")
    if n <= 0 or n > min(len(raw) - 8, MAX_MANIFEST_CHARS + 2**20):
        raise SessionError("The file is not a Lensbench session (bad header size).")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SessionError("The file is not a Lensbench session (unreadable header).") from None
    if not isinstance(header, dict):
        raise SessionError("The file is not a Lensbench session (header is not an object).")
    return header


def load_session(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Return (manifest, arrays) or raise SessionError with a message for the user."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SessionError(f"Cannot open {path}: {exc.strerror or exc}") from None
    if size > MAX_FILE_BYTES:
        raise SessionError(f"{path.name} is {size / 2**20:.0f} MiB, larger than any session "
                           f"Lensbench writes ({MAX_FILE_BYTES // 2**20} MiB).")
    raw = path.read_bytes()
    header = _read_header(raw)
    meta = header.get("__metadata__") or {}
    text = meta.get("lensbench_manifest") if isinstance(meta, dict) else None
    if not isinstance(text, str) or len(text) > MAX_MANIFEST_CHARS:
        raise SessionError(f"{path.name} is not a Lensbench session (no manifest).")
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError:
        raise SessionError(f"{path.name} has a corrupt manifest.") from None
    if not isinstance(manifest, dict):
        raise SessionError(f"{path.name} has a corrupt manifest.")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise SessionError(f"{path.name} has no valid schema_version.")
    if version > SCHEMA_VERSION:
        raise SessionError(f"{path.name} was written by a newer Lensbench (schema {version}; "
                           f"this version reads up to {SCHEMA_VERSION}). Update Lensbench.")
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in ("F64", "F32", "F16", "I64",
                                                                     "I32", "BOOL"):
            raise SessionError(f"{path.name}: array {name!r} has an unsupported type.")
        shape = entry.get("shape")
        if not isinstance(shape, list) or len(shape) > 6 or any(
                not isinstance(d, int) or d < 0 for d in shape):
            raise SessionError(f"{path.name}: array {name!r} has an invalid shape.")
    try:
        arrays = st_load(raw)
    except Exception as exc:
        raise SessionError(f"{path.name} is corrupt: {exc}") from None
    return migrate(manifest), arrays


def migrate(manifest: dict) -> dict:
    """Bring an old manifest up to SCHEMA_VERSION one step at a time (only v1 exists so far)."""
    return manifest
