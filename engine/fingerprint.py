"""A model's weights fingerprint: which checkpoint a saved result was computed on.

Hashing every byte of a multi-gigabyte checkpoint would add seconds to each load, so the hash
covers what identifies the weights cheaply: every safetensors file's header (names, dtypes, shapes,
offsets) and the first 4 KiB of each tensor's data. A fine-tune changes the data of the tensors it
trains, so it changes the fingerprint; the same checkpoint copied elsewhere keeps it. Reads at most
a few MB; no torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

SAMPLE_BYTES = 4096
MAX_HEADER_BYTES = 100 * 2**20


def weights_fingerprint(folder: str | Path) -> str:
    """"sha256:<hex>" over the folder's safetensors files, or "" when there are none or they
    cannot be read (a fingerprint is a label, never a reason to fail a load)."""
    files = sorted(Path(folder).glob("*.safetensors"), key=lambda p: p.name)
    if not files:
        return ""
    digest = hashlib.sha256()
    try:
        for path in files:
            digest.update(path.name.encode("utf-8"))
            _hash_file(path, digest)
    except (OSError, ValueError):
        return ""
    return "sha256:" + digest.hexdigest()


def _hash_file(path: Path, digest) -> None:
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise ValueError("not a safetensors file")
        n = int.from_bytes(raw, "little")
        if not 0 < n <= MAX_HEADER_BYTES:
            raise ValueError("bad safetensors header size")
        header_bytes = fh.read(n)
        digest.update(header_bytes)
        header = json.loads(header_bytes)
        if not isinstance(header, dict):
            raise ValueError("bad safetensors header")
        starts = sorted({int(entry["data_offsets"][0]) for name, entry in header.items()
                         if name != "__metadata__" and isinstance(entry, dict)
                         and isinstance(entry.get("data_offsets"), list)})
        for start in starts:
            fh.seek(8 + n + start)
            digest.update(fh.read(SAMPLE_BYTES))
