"""Reading files a user names, which may be hostile: regular files only, and never more bytes
than asked for.

``Path.read_bytes`` after a size check is not enough: a symlink to /dev/zero reports size 0 and
then reads until memory runs out, and a named pipe blocks the reading thread forever. Both are
refused here before they are opened for reading.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

CLIP_CHARS = 200


class UnsafeFile(Exception):
    """The path is not a regular file of a sane size; the message is for the user."""


def clip(text: object, limit: int = CLIP_CHARS) -> str:
    """``text`` shortened for display: a string from a file can be megabytes long, and a message
    box sized to it is unusable (and Qt has crashed laying out half a million characters)."""
    s = str(text)
    return s if len(s) <= limit else s[: max(0, limit - 1)] + "…"


def regular_file_size(path: str | Path) -> int:
    """The size of ``path`` if it resolves to a regular file; else UnsafeFile."""
    name = clip(Path(path).name, 80)
    try:
        st = os.stat(path)  # follows symlinks: what would really be read
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "invalid path"
        raise UnsafeFile(f"Cannot open {name}: {reason}.") from None
    if stat.S_ISDIR(st.st_mode):
        raise UnsafeFile(f"{name} is a folder, not a file.")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(f"{name} is not a regular file (a device, pipe or socket).")
    return st.st_size


def read_regular_file(path: str | Path, max_bytes: int) -> bytes:
    """At most ``max_bytes`` bytes of a regular file; UnsafeFile if it is larger or not regular.

    The file is opened non-blocking (a pipe swapped in after the check cannot block) and checked
    again through its descriptor, so a path changed between the checks is caught too."""
    name = clip(Path(path).name, 80)
    size = regular_file_size(path)
    if size > max_bytes:
        raise UnsafeFile(f"{name} is {size / 2**20:.1f} MiB, more than the "
                         f"{max_bytes / 2**20:.1f} MiB such a file can be.")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise UnsafeFile(f"Cannot open {name}: {exc.strerror or exc}.") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeFile(f"{name} is not a regular file.")
        chunks: list[bytes] = []
        total = 0
        while total <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise UnsafeFile(f"Cannot read {name}: {exc.strerror or exc}.") from None
    finally:
        os.close(fd)
    if total > max_bytes:
        raise UnsafeFile(f"{name} grew beyond {max_bytes / 2**20:.1f} MiB while being read.")
    return b"".join(chunks)
