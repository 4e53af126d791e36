"""Reading an exported CSV as a user's script would: the ``# key: value`` lines, then the table."""

from __future__ import annotations

import csv
import io


def read_export(path) -> tuple[dict[str, str], list[str], list[list[str]]]:
    """(the leading about lines as a dict, header row, data rows); fields may hold newlines."""
    about: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        text = fh.read()
    while text.startswith("# "):
        line, _, text = text.partition("\n")
        key, _, value = line[2:].partition(": ")
        about[key] = value
    rows = list(csv.reader(io.StringIO(text, newline="")))
    return about, rows[0], rows[1:]
