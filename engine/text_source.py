"""Text to run the model on, for SAE training and feature dashboards, streamed as token rows.

Sources: the bundled corpus sample of the model organism (``resources/corpus``), a user's text
file (UTF-8, optionally gzip-compressed; one document per line, or paragraphs), or a Hugging Face
dataset that is already in the local cache (never downloaded here). Documents are tokenised
without special tokens, joined with the end-of-text token and cut into rows of
``context_size`` tokens, each starting with BOS when the model's tokenizer prepends one (as SAELens packs its contexts).

Files are checked before use: an empty file, a binary one, or one that is not UTF-8 gets a clear
message instead of a stream of garbage tokens.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.errors import InputError
from engine.jobs import JobContext

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
BUNDLED_CORPUS = RESOURCES / "corpus" / "lensbench-organism-sample.txt.gz"
KINDS = ("bundled", "file", "hf")
_SNIFF = 1 << 16


@dataclass(frozen=True)
class TextSource:
    kind: str = "bundled"  # bundled | file | hf
    path: str = ""  # file path, or HF dataset name ("org/name")
    split: str = "train"  # HF datasets only
    column: str = "text"  # HF datasets only

    def label(self) -> str:
        if self.kind == "bundled":
            return "bundled corpus sample"
        if self.kind == "file":
            return Path(self.path).name
        return f"{self.path} [{self.split}]"


def _open_text(path: Path):
    raw = path.open("rb")
    head = raw.read(2)
    raw.seek(0)
    if head == b"\x1f\x8b":
        return gzip.open(raw, "rb")
    return raw


def check_text_file(path: str | Path) -> None:
    """InputError when ``path`` is missing, empty, binary or not UTF-8 text."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file.", "Pick a text file.")
    try:
        with _open_text(path) as f:
            sample = f.read(_SNIFF)
    except (OSError, EOFError) as exc:
        raise InputError(f"Cannot read {path.name}: {exc}", "Pick a readable text file.") from None
    if not sample.strip():
        raise InputError(f"{path.name} is empty.", "Pick a file with text in it.")
    if b"\x00" in sample:
        raise InputError(f"{path.name} is not a text file (it contains binary data).",
                         "Pick a plain UTF-8 text file (.txt), one document per line.")
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 4:  # a multi-byte character cut at the sniff's end is fine
            raise InputError(f"{path.name} is not UTF-8 text (byte {exc.start}).",
                             "Save it as UTF-8, or pick another file.") from None


def _file_documents(path: Path) -> Iterator[str]:
    with _open_text(path) as f:
        for raw in f:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{path.name} is not UTF-8 text further in.",
                                 "Save it as UTF-8, or pick another file.") from None
            if "\x00" in line:
                raise InputError(f"{path.name} contains binary data further in.",
                                 "Pick a plain text file.")
            line = line.strip()
            if line:
                yield line


def _hf_documents(source: TextSource) -> Iterator[str]:
    import datasets
    import huggingface_hub.constants as hub_constants

    saved = (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        ds = datasets.load_dataset(source.path, split=source.split or "train")
    except Exception as exc:  # noqa: BLE001 - missing from the cache, bad name, bad split
        raise InputError(f"The dataset {source.path!r} ({source.split}) is not in the local "
                         f"Hugging Face cache: {type(exc).__name__}: {str(exc)[:300]}",
                         "Lensbench never downloads datasets for training. On a machine with "
                         "network run `datasets.load_dataset(name)` once, or export the text to "
                         "a file and pick that.") from None
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved
    column = source.column or "text"
    if column not in ds.column_names:
        raise InputError(f"The dataset has no column {column!r} (it has "
                         f"{', '.join(ds.column_names)}).", "Name the text column.")
    for row in ds:
        text = row[column]
        if isinstance(text, str) and text.strip():
            yield text


def documents(source: TextSource) -> Iterator[str]:
    """The source's documents as strings (checked first, so errors come before any work)."""
    if source.kind not in KINDS:
        raise InputError(f"Unknown text source {source.kind!r}.", f"Use one of {KINDS}.")
    if source.kind == "hf":
        if not source.path.strip():
            raise InputError("No dataset name given.", "Type a name such as 'NeelNanda/pile-10k'.")
        return _hf_documents(source)
    path = BUNDLED_CORPUS if source.kind == "bundled" else Path(source.path).expanduser()
    if source.kind == "bundled" and not path.is_file():
        raise InputError("The bundled corpus sample is missing.", f"Expected {path}.")
    check_text_file(path)
    return _file_documents(path)


def source_digest(source: TextSource) -> str:
    """Identifies a source's content (dashboard cache keys)."""
    h = hashlib.sha256(f"{source.kind}|{source.split}|{source.column}".encode())
    if source.kind == "hf":
        h.update(source.path.encode())
    else:
        path = BUNDLED_CORPUS if source.kind == "bundled" else Path(source.path).expanduser()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:24]


def token_rows(host, source: TextSource, context_size: int, max_tokens: int, rows_per_batch: int,
               ctx: JobContext | None = None, prepend_bos: bool | None = None
               ) -> Iterator[torch.Tensor]:
    """Batches [rows, context_size] of token ids on the host's device, up to ``max_tokens``.
    Rows start with BOS when the model's BOS policy says so (``engine.tokens.bos_policy``).

    Raises InputError when the source yields no tokens at all."""
    from engine.tokens import bos_policy

    prepend_bos = bos_policy(host, prepend_bos)
    tok = host.tokenizer
    n_ctx = int(host.info.n_ctx)
    if not 2 <= context_size <= n_ctx:
        raise InputError(f"Context size {context_size} does not fit the model ({n_ctx} tokens).",
                         f"Use 2-{n_ctx}.")
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    sep = tok.eos_token_id if tok.eos_token_id is not None else bos
    body = context_size - 1 if prepend_bos and bos is not None else context_size
    buffer: list[int] = []
    rows: list[list[int]] = []
    produced = 0
    docs = documents(source)
    pending: list[str] = []

    def flush_docs():
        ids = tok(pending, add_special_tokens=False)["input_ids"]
        for seq in ids:
            buffer.extend(seq)
            if sep is not None:
                buffer.append(sep)
        pending.clear()

    def take_rows():
        nonlocal buffer
        while len(buffer) >= body:
            row, buffer = buffer[:body], buffer[body:]
            rows.append(([bos] if body < context_size else []) + row)

    for doc in docs:
        pending.append(doc)
        if len(pending) >= 256:
            if ctx is not None:
                ctx.check_cancelled()
            flush_docs()
            take_rows()
            while len(rows) >= rows_per_batch:
                batch, rows[:] = rows[:rows_per_batch], rows[rows_per_batch:]
                room = (max_tokens - produced) // context_size
                if room <= 0:
                    return
                batch = batch[:room]
                produced += len(batch) * context_size
                yield torch.tensor(batch, dtype=torch.long, device=host.device)
    if pending:
        flush_docs()
    take_rows()
    if not rows and produced == 0:
        raise InputError(f"The text source ({source.label()}) has fewer than {context_size} "
                         "tokens.", "Pick a longer text, or a smaller context size.")
    while rows:
        room = (max_tokens - produced) // context_size
        if room <= 0:
            return
        batch, rows[:] = rows[:min(rows_per_batch, room)], rows[min(rows_per_batch, room):]
        produced += len(batch) * context_size
        yield torch.tensor(batch, dtype=torch.long, device=host.device)
