"""Computed results in session files: saved with the model's fingerprint, shown again on open.

Each panel binding names the results it shows (``session_results()``: name -> engine result, a
frozen dataclass) and takes them back (``restore_results(dict)``). Here they become JSON plus
arrays: every numpy array goes into the safetensors body bit for bit; the rest (strings, numbers,
tuples, dicts) into the manifest, with tags ``$a`` (array), ``$t`` (tuple), ``$d`` (dict),
``$f`` (non-finite float) and ``$c`` (a result class, by a name this module maps to the class:
a name from the file is only ever a key of ``CLASSES``, never imported).

On open the results wait for the model: they are shown only if the loaded model has the same
weights fingerprint (engine.fingerprint) as the one they were computed on. The panels that get
results back skip the prompt's automatic rerun; if the model differs, each panel says why its
saved numbers are not shown and offers to recompute them (its notice bar).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Any

import numpy as np

FORMAT = 1
MAX_DEPTH = 24
MAX_NODES = 2_000_000
# name in the file -> (module, class): the only classes a file can name.
CLASSES = {
    "PromptResult": ("engine.prompt_result", "PromptResult"),
    "AttributionResult": ("engine.attribution", "AttributionResult"),
    "SweepResult": ("engine.patching", "SweepResult"),
    "PinnedAttention": ("engine.attention_pins", "PinnedAttention"),
    "PlanResult": ("engine.patch_plan", "PlanResult"),
    "PathPatchResult": ("engine.path_patching", "PathPatchResult"),
    "InductionResult": ("engine.induction", "InductionResult"),
    "AblationResult": ("engine.induction", "AblationResult"),
}


class ResultsError(Exception):
    """Saved results that cannot be read back; the message is for the user."""


# -- encoding -------------------------------------------------------------------------------------
def encode(value: Any, arrays: dict[str, np.ndarray], prefix: str) -> Any:
    """``value`` as JSON-able data; its arrays are added to ``arrays`` under ``prefix``."""
    if isinstance(value, np.ndarray):
        key = f"{prefix}{len(arrays)}"
        arrays[key] = value
        return {"$a": key}
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else {"$f": repr(value)}
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return {"$t": [encode(v, arrays, prefix) for v in value]}
    if isinstance(value, list):
        return [encode(v, arrays, prefix) for v in value]
    if isinstance(value, dict):
        return {"$d": [[encode(k, arrays, prefix), encode(v, arrays, prefix)]
                       for k, v in value.items()]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if name not in CLASSES:
            raise TypeError(f"{name} results are not saved in sessions")
        return {"$c": name, "f": {f.name: encode(getattr(value, f.name), arrays, prefix)
                                  for f in dataclasses.fields(value)}}
    raise TypeError(f"cannot save a {type(value).__name__} in a session")


def decode(data: Any, arrays: dict[str, np.ndarray]) -> Any:
    """The inverse of :func:`encode`, for data from a file: bounded depth and size, arrays that
    exist, classes from ``CLASSES`` only, and only their own fields."""
    budget = [MAX_NODES]
    return _decode(data, arrays, 0, budget)


def _decode(data: Any, arrays: dict, depth: int, budget: list[int]) -> Any:
    budget[0] -= 1
    if depth > MAX_DEPTH or budget[0] < 0:
        raise ResultsError("The saved results are nested too deeply or are too large.")
    if data is None or isinstance(data, (bool, str)):
        return data
    if isinstance(data, int):
        if abs(data) >= 2**63:
            raise ResultsError("A saved result holds an integer out of range.")
        return data
    if isinstance(data, float):
        if not math.isfinite(data):
            raise ResultsError("A saved result holds a malformed number.")
        return data
    if isinstance(data, list):
        return [_decode(v, arrays, depth + 1, budget) for v in data]
    if not isinstance(data, dict) or len(data) not in (1, 2):
        raise ResultsError("The saved results are malformed.")
    if "$a" in data:
        array = arrays.get(data["$a"]) if isinstance(data["$a"], str) else None
        if array is None:
            raise ResultsError("A saved result refers to an array the file does not hold.")
        return array
    if "$f" in data:
        if data["$f"] not in ("nan", "inf", "-inf"):
            raise ResultsError("A saved result holds a malformed number.")
        return float(data["$f"])
    if "$t" in data and isinstance(data["$t"], list):
        return tuple(_decode(v, arrays, depth + 1, budget) for v in data["$t"])
    if "$d" in data and isinstance(data["$d"], list):
        out = {}
        for pair in data["$d"]:
            if not isinstance(pair, list) or len(pair) != 2:
                raise ResultsError("The saved results are malformed.")
            key = _decode(pair[0], arrays, depth + 1, budget)
            if not isinstance(key, (str, int, float, bool, tuple)) or key is None:
                raise ResultsError("The saved results are malformed.")
            out[key] = _decode(pair[1], arrays, depth + 1, budget)
        return out
    if "$c" in data and isinstance(data.get("f"), dict):
        return _instance(data["$c"], data["f"], arrays, depth, budget)
    raise ResultsError("The saved results are malformed.")


def _instance(name: Any, fields: dict, arrays: dict, depth: int, budget: list[int]) -> Any:
    if not isinstance(name, str) or name not in CLASSES:
        raise ResultsError("The saved results name a kind of result this version does not "
                           "know.")
    module, attr = CLASSES[name]
    cls = getattr(importlib.import_module(module), attr)
    known = {f.name: f for f in dataclasses.fields(cls)}
    if not set(fields) <= set(known):
        raise ResultsError(f"A saved {name} has fields this version does not know.")
    values = {k: _decode(v, arrays, depth + 1, budget) for k, v in fields.items()}
    try:
        return cls(**values)
    except TypeError:
        raise ResultsError(f"A saved {name} is incomplete.") from None


def expect(results: dict, key: str, class_name: str):
    """``results[key]`` if it is a ``class_name`` result, None if absent; else ResultsError."""
    value = results.get(key)
    if value is None:
        return None
    if type(value).__name__ != class_name or not dataclasses.is_dataclass(value):
        raise ResultsError(f"The saved {key} result is not a {class_name}.")
    return value


def int_pairs(value) -> tuple[tuple[int, int], ...]:
    """(layer, head) pairs from a decoded result (hostile data: anything else gives ())."""
    if not isinstance(value, (tuple, list)):
        return ()
    out = []
    for item in value[:4096]:
        if not (isinstance(item, (tuple, list)) and len(item) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
            return ()
        out.append((int(item[0]), int(item[1])))
    return tuple(out)


def problem(saved: object, arrays: dict[str, np.ndarray]) -> str | None:
    """Why a file's "results" entry cannot be used, or None: checked before the file changes
    anything (the panels' own checks come when they are shown). Imports nothing."""
    if saved is None:
        return None
    if not isinstance(saved, dict) or not isinstance(saved.get("panels"), dict):
        return "Its saved results are malformed."
    if saved.get("format") != FORMAT:
        return "Its saved results are in a format this version does not read."
    for key in ("model", "fingerprint"):
        if not isinstance(saved.get(key, ""), str) or len(saved.get(key, "")) > 4096:
            return "Its saved results are malformed."
    stack = [(saved["panels"], 0)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if depth > MAX_DEPTH or nodes > MAX_NODES:
            return "Its saved results are nested too deeply or are too large."
        if isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, dict):
            if "$a" in node and (not isinstance(node["$a"], str) or node["$a"] not in arrays):
                return "Its saved results refer to an array the file does not hold."
            if "$c" in node and node["$c"] not in CLASSES:
                return "Its saved results name a kind of result this version does not know."
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, float) and not math.isfinite(node):
            return "Its saved results hold a malformed number."
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) >= 2**63:
            return "Its saved results hold an integer out of range."
    return None


# -- saving ---------------------------------------------------------------------------------------
def collect(window) -> tuple[dict | None, dict[str, np.ndarray]]:
    """(the manifest's "results" entry, its arrays) for the window's panels, or (None, {})."""
    info = window.controller.model_info
    if info is None:
        return None, {}
    arrays: dict[str, np.ndarray] = {}
    panels = {}
    for i, binding in enumerate(window.bindings):
        results = {k: v for k, v in binding.session_results().items() if v is not None}
        if results:
            panels[binding.object_name] = {name: encode(value, arrays, f"r{i}.")
                                           for name, value in results.items()}
    if not panels:
        return None, {}
    return {"format": FORMAT, "model": info.name, "fingerprint": info.fingerprint,
            "versions": versions(), "panels": panels}, arrays


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("lensbench", "transformer-lens", "torch", "transformers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


# -- opening --------------------------------------------------------------------------------------
def restore(window, manifest: dict, arrays: dict[str, np.ndarray]):
    """Show the file's results once the model they belong to is loaded. If it is loaded now,
    returns the function that shows them, for the caller to call once the session's prompt has
    been run (the panels that get results back skip that run); else None."""
    saved = manifest.get("results")
    if not isinstance(saved, dict) or not isinstance(saved.get("panels"), dict):
        return None
    bindings = {b.object_name: b for b in window.bindings}
    names = [n for n in saved["panels"] if n in bindings]
    if not names:
        return None
    prompt = str(manifest.get("prompt", ""))
    for name in names:
        bindings[name].restored_prompt = prompt  # the automatic rerun of that prompt is skipped
    controller = window.controller
    if not controller.loading and controller.model_info is not None:
        return lambda: _apply(window, saved, arrays, names)

    def loaded(_info) -> None:
        done()
        _apply(window, saved, arrays, names)

    def failed(_info) -> None:
        done()
        for name in names:
            bindings[name].restored_prompt = None

    def done() -> None:
        controller.model_loaded.disconnect(loaded)
        controller.model_failed.disconnect(failed)

    controller.model_loaded.connect(loaded)
    controller.model_failed.connect(failed)
    return None


def _apply(window, saved: dict, arrays: dict, names: list[str]) -> None:
    bindings = {b.object_name: b for b in window.bindings}
    info = window.controller.model_info
    why = ""
    if info is None or not info.fingerprint or saved.get("fingerprint") != info.fingerprint:
        why = (f"they were computed on {str(saved.get('model', 'another model'))[:120]}, and the "
               f"loaded model's weights differ")
    failed = []
    for name in names:
        binding = bindings[name]
        prompt = binding.restored_prompt
        if prompt is None:
            continue  # another prompt ran meanwhile: the saved results are not current
        binding.restored_prompt = None
        try:
            data = saved["panels"][name]
            if not isinstance(data, dict):
                raise ResultsError("The saved results are malformed.")
            results = {str(k): decode(v, arrays) for k, v in data.items()}
        except Exception:  # noqa: BLE001 - hostile data: the panel's own analysis of the prompt
            results = None
        if why:
            # Not shown (a number on screen belongs to the loaded model): say so, and offer to
            # compute the same analyses afresh rather than spending minutes unasked.
            binding.offer_recompute(f"The session's results for this panel are not shown: "
                                    f"{why}.", results or {}, prompt)
            continue
        try:
            if results is None:
                raise ResultsError("The saved results are malformed.")
            binding.restore_results(results)
            continue
        except Exception:  # noqa: BLE001 - results the panel cannot show: recompute
            failed.append(binding.title)
        if prompt:
            binding.on_prompt_run(prompt, False)  # compute what the file's numbers would have been
    if why:
        window.statusBar().showMessage(f"The session's saved results are not shown: {why}. "
                                       "Each panel offers to recompute them.", 15000)
    elif failed:
        window.statusBar().showMessage("Some saved results could not be shown (" +
                                       ", ".join(failed) + "); they were computed again.", 15000)
