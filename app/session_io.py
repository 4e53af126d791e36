"""Session files (*.lensbench): a safetensors file whose metadata holds a JSON manifest.

Sessions are data, never code: no pickle, no torch.load, no eval. Reading checks the file size,
the manifest's size and schema, and every array's dtype and shape before using it. Saving is
atomic through QSaveFile, so the previous file survives until the new one is complete.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSaveFile
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from engine.safe_files import UnsafeFile, clip, read_regular_file

# 1: settings only (model, prompt, selection, panel states, layout).
# 2: + computed results with the model's fingerprint ("results", app.session_results) and the
#    notes dock's text (panels.notesDock).
SCHEMA_VERSION = 3
SUFFIX = ".lensbench"
MAX_FILE_BYTES = 512 * 2**20
MAX_MANIFEST_CHARS = 4 * 2**20
ALLOWED_DTYPES = {np.dtype(t) for t in ("float64", "float32", "float16", "int64", "int32",
                                         "bool")}


class SessionError(Exception):
    """A session file that cannot be read or written; the message is for the user."""


_WRITE_PROBLEMS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EACCES: "you do not have permission to write there",
    errno.EPERM: "you do not have permission to write there",
    errno.EROFS: "the folder is on a read-only disk",
    errno.ENOENT: "the folder does not exist",
    errno.ENOTDIR: "the folder does not exist",
    errno.EISDIR: "a folder has that name",
    errno.ENAMETOOLONG: "the file name is too long",
}


def write_problem(exc: OSError) -> str:
    """An OSError from writing, in words (never "Unknown error")."""
    return _WRITE_PROBLEMS.get(exc.errno or -1) or clip(exc.strerror or exc, 120)


def save_session(path: str | Path, manifest: dict, arrays: dict[str, np.ndarray] | None = None):
    manifest = dict(manifest, schema_version=SCHEMA_VERSION, app="lensbench")
    arrays = {k: np.ascontiguousarray(v) for k, v in (arrays or {}).items()}
    for k, v in arrays.items():
        if v.dtype not in ALLOWED_DTYPES:
            raise SessionError(f"Array {k!r} has unsupported dtype {v.dtype}.")
    data = st_save(arrays, metadata={"lensbench_manifest": json.dumps(manifest)})
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise SessionError(f"Cannot save {clip(Path(path).name, 80)}: {write_problem(exc)}. "
                           "The previous file, if any, is intact.") from None


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write through QSaveFile (the old file stays until the new one is complete); failures
    become OSError with the errno the cause has, since Qt reports a full disk as "Unknown
    error"."""
    f = QSaveFile(str(path))
    if not f.open(QSaveFile.OpenModeFlag.WriteOnly):
        raise _diagnose(path, len(data), f.errorString())
    written = f.write(data)
    if written != len(data):
        f.cancelWriting()
        f.commit()
        raise _diagnose(path, len(data), f.errorString())
    if not f.commit():
        raise _diagnose(path, len(data), f.errorString())


def _diagnose(path: str | Path, n_bytes: int, qt_text: str) -> OSError:
    """Why a write failed, as an errno: read-only disk, permission, full disk, else Qt's text."""
    folder = Path(path).parent
    code = 0
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # no such folder; or not POSIX
        st = None
        code = errno.ENOENT if not folder.is_dir() else 0
    if st is not None:
        if st.f_flag & getattr(os, "ST_RDONLY", 1):
            code = errno.EROFS
        elif not os.access(folder, os.W_OK) or (Path(path).exists()
                                                and not os.access(path, os.W_OK)):
            code = errno.EACCES
        elif st.f_bavail * st.f_frsize < n_bytes + 2**16:
            code = errno.ENOSPC
    return OSError(code, qt_text or "the write failed")


def _json(text: str | bytes, what: str) -> object:
    """``text`` parsed, or SessionError("{what}." / "{what} (nested too deeply).")."""
    try:
        return json.loads(text)
    except RecursionError:
        raise SessionError(f"{what} (nested too deeply).") from None
    except (UnicodeDecodeError, ValueError):  # also ints of more than 4300 digits
        raise SessionError(f"{what}.") from None


def _read_header(raw: bytes) -> dict:
    if len(raw) < 8:
        raise SessionError("The file is too short to be a Lensbench session.")
    n = int.from_bytes(raw[:8], "little")
    if n <= 0 or n > min(len(raw) - 8, MAX_MANIFEST_CHARS + 2**20):
        raise SessionError("The file is not a Lensbench session (bad header size).")
    try:
        header = _json(raw[8:8 + n].decode("utf-8"),
                       "The file is not a Lensbench session (unreadable header)")
    except UnicodeDecodeError:
        raise SessionError("The file is not a Lensbench session (unreadable header).") from None
    if not isinstance(header, dict):
        raise SessionError("The file is not a Lensbench session (header is not an object).")
    return header


def load_session(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Return (manifest, arrays) or raise SessionError with a message for the user.

    Only a regular file is read, and never more than MAX_FILE_BYTES + 1 bytes of it: a symlink
    to /dev/zero or a named pipe is refused before it is read."""
    path = Path(path)
    name = clip(path.name, 80)
    try:
        raw = read_regular_file(path, MAX_FILE_BYTES)
    except UnsafeFile as exc:
        raise SessionError(f"{exc} Lensbench sessions are files of at most "
                           f"{MAX_FILE_BYTES // 2**20} MiB.") from None
    header = _read_header(raw)
    meta = header.get("__metadata__") or {}
    text = meta.get("lensbench_manifest") if isinstance(meta, dict) else None
    if not isinstance(text, str) or len(text) > MAX_MANIFEST_CHARS:
        raise SessionError(f"{name} is not a Lensbench session (no manifest).")
    manifest = _json(text, f"{name} has a corrupt manifest")
    if not isinstance(manifest, dict):
        raise SessionError(f"{name} has a corrupt manifest.")
    version = manifest.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SessionError(f"{name} has no valid schema_version.")
    if version > SCHEMA_VERSION:
        raise SessionError(f"{name} was written by a newer Lensbench (schema "
                           f"{clip(version, 20)}; this version reads up to {SCHEMA_VERSION}). "
                           "Update Lensbench.")
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in ("F64", "F32", "F16", "I64",
                                                                     "I32", "BOOL"):
            raise SessionError(f"{name}: array {clip(key, 80)!r} has an unsupported type.")
        shape = entry.get("shape")
        if not isinstance(shape, list) or len(shape) > 6 or any(
                isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < 2**40
                for d in shape):
            raise SessionError(f"{name}: array {clip(key, 80)!r} has an invalid shape.")
    try:
        arrays = st_load(raw)
    except Exception as exc:
        raise SessionError(f"{name} is corrupt: {clip(exc, 160)}") from None
    return migrate(manifest), arrays


def _v1_to_v2(manifest: dict) -> dict:
    """Version 2 only added keys (results, notes); a version-1 file has neither, and its
    "results" key, should one be there, is not a version-1 thing: dropped, never trusted."""
    out = {k: v for k, v in manifest.items() if k != "results"}
    out["schema_version"] = 2
    return out


def _v2_to_v3(manifest: dict) -> dict:
    """Version 3 added the attention panel's pinned heads and layer view (its state's "pinned"
    and "layer_view") and the pinned heads' patterns among the results; a version-2 file has
    none of them, and nothing else changed."""
    return dict(manifest, schema_version=3)


MIGRATIONS = {1: _v1_to_v2, 2: _v2_to_v3}  # version -> the step to the next version


def migrate(manifest: dict) -> dict:
    """Bring an old manifest up to SCHEMA_VERSION one step at a time."""
    while manifest.get("schema_version", SCHEMA_VERSION) < SCHEMA_VERSION:
        manifest = MIGRATIONS[manifest["schema_version"]](manifest)
    return manifest
