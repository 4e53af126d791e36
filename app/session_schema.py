"""The shape a session manifest must have before any of it is applied.

A session file is hostile data. Applying it field by field and catching what breaks leaves a
half-applied session behind and lets Python's own messages ("'int' object has no attribute
'split'") reach the user. So the whole manifest is checked first, against a declarative schema
with types, bounds and lengths; a failure names the field (``panels.patchingDock.plan[0]
.positions``) and nothing is applied. Unknown keys are allowed (a newer minor version may add
them), but every value in the tree is bounded: nesting depth, integers, non-finite numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from engine.safe_files import clip

INT32 = 2**31 - 1
MAX_DEPTH = 12
MAX_INT = 2**53
MAX_PROMPT = 100_000  # characters; the prompt editor refuses longer pastes too
MAX_TEXT = 200_000


class SchemaError(ValueError):
    """A manifest value of the wrong type or out of bounds; ``path`` names the field."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path or 'the manifest'}: {problem}")
        self.path = path
        self.problem = problem


def _type_name(value: object) -> str:
    return {bool: "true/false", int: "a whole number", float: "a number", str: "text",
            list: "a list", dict: "an object", type(None): "null"}.get(type(value),
                                                                      type(value).__name__)


class Field:
    """One node of the schema; ``check`` raises SchemaError naming ``path``."""

    def check(self, value: object, path: str) -> None:
        raise NotImplementedError


class Any(Field):
    def check(self, value: object, path: str) -> None:
        pass


class Str(Field):
    def __init__(self, max_len: int = 1000) -> None:
        self.max_len = max_len

    def check(self, value: object, path: str) -> None:
        if not isinstance(value, str):
            raise SchemaError(path, f"expected text, found {_type_name(value)}")
        if len(value) > self.max_len:
            raise SchemaError(path, f"text of {len(value)} characters; at most {self.max_len}")


class Bool(Field):
    def check(self, value: object, path: str) -> None:
        if not isinstance(value, bool):
            raise SchemaError(path, f"expected true or false, found {_type_name(value)}")


class Int(Field):
    def __init__(self, lo: int = -INT32, hi: int = INT32) -> None:
        self.lo, self.hi = lo, hi

    def check(self, value: object, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(path, f"expected a whole number, found {_type_name(value)}")
        if not self.lo <= value <= self.hi:
            raise SchemaError(path, f"{clip(value, 24)} is out of range ({self.lo} to {self.hi})")


class Num(Field):
    """A finite number (JSON's Infinity and NaN are refused)."""

    def __init__(self, lo: float = -1e30, hi: float = 1e30) -> None:
        self.lo, self.hi = lo, hi

    def check(self, value: object, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaError(path, f"expected a number, found {_type_name(value)}")
        if not (math.isfinite(value) and self.lo <= value <= self.hi):
            raise SchemaError(path, f"{clip(value, 24)} is out of range ({self.lo:g} to "
                                    f"{self.hi:g})")


class Opt(Field):
    """``inner`` or null."""

    def __init__(self, inner: Field) -> None:
        self.inner = inner

    def check(self, value: object, path: str) -> None:
        if value is not None:
            self.inner.check(value, path)


class List(Field):
    def __init__(self, item: Field, max_len: int = 1000, length: int | None = None) -> None:
        self.item, self.max_len, self.length = item, max_len, length

    def check(self, value: object, path: str) -> None:
        if not isinstance(value, list):
            raise SchemaError(path, f"expected a list, found {_type_name(value)}")
        if self.length is not None and len(value) != self.length:
            raise SchemaError(path, f"expected {self.length} items, found {len(value)}")
        if len(value) > self.max_len:
            raise SchemaError(path, f"{len(value)} items; at most {self.max_len}")
        for i, item in enumerate(value):
            self.item.check(item, f"{path}[{i}]")


class Obj(Field):
    """An object with these optional fields (``required`` must be present); others may exist."""

    def __init__(self, fields: Mapping[str, Field], required: tuple[str, ...] = (),
                 values: Field | None = None, max_keys: int = 256) -> None:
        self.fields, self.required, self.values, self.max_keys = fields, required, values, \
            max_keys

    def check(self, value: object, path: str) -> None:
        if not isinstance(value, dict):
            raise SchemaError(path, f"expected an object, found {_type_name(value)}")
        if len(value) > self.max_keys:
            raise SchemaError(path, f"{len(value)} entries; at most {self.max_keys}")
        for key in self.required:
            if key not in value:
                raise SchemaError(_join(path, key), "missing")
        for key, item in value.items():
            field = self.fields.get(key, self.values)
            if field is not None:
                field.check(item, _join(path, key))


def _join(path: str, key: str) -> str:
    key = clip(key, 40)
    return f"{path}.{key}" if path else key


def check_tree(value: object, path: str = "", depth: int = 0) -> None:
    """Bounds on every value, also those no schema names: depth, integer size, finiteness."""
    if depth > MAX_DEPTH:
        raise SchemaError(path, f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        for key, item in value.items():
            check_tree(item, _join(path, key), depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_tree(item, f"{path}[{i}]", depth + 1)
    elif isinstance(value, bool) or value is None or isinstance(value, str):
        pass
    elif isinstance(value, int):
        if abs(value) > MAX_INT:
            raise SchemaError(path, "a number too large to be a setting")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise SchemaError(path, "Infinity or NaN is not a valid setting")


MODEL = Obj({"source": Str(16), "name": Str(4096), "device": Str(32), "dtype": Str(16),
             "n_devices": Int(1, 64)})
SELECTION = Obj({"prompt": Str(MAX_PROMPT), "position": Int(-1, INT32),
                 "layer": Int(0, 100_000), "head": Int(-1, 100_000)})
MANIFEST = Obj({
    "schema_version": Int(1, 10_000), "app": Str(64), "model": MODEL,
    "prompt": Str(MAX_PROMPT), "top_k": Int(1, 50), "selection": SELECTION,
    "panels": Obj({}, values=Obj({}), max_keys=64), "window_state": Str(4 * 2**20),
})


def validate_manifest(manifest: dict) -> None:
    """Raise SchemaError unless the whole manifest (panels aside: each binding checks its own
    state) is in bounds."""
    # Saved results are deeper than settings (tuples of tuples of token strings) and have their
    # own bounds, checked by app.session_results.problem before anything is applied.
    check_tree({k: v for k, v in manifest.items() if k != "results"})
    MANIFEST.check(manifest, "")
