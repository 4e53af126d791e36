"""File > Open/Save session: gathers state from the window and its panels, and restores it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from app.session_io import SUFFIX, SessionError, load_session, save_session, write_problem
from app.session_schema import SchemaError, validate_manifest
from engine.errors import ModelLoadError
from engine.model_sources import ModelSpec, check_spec
from engine.safe_files import clip


def content_of(window) -> dict:
    """The session's work (model, prompt, selection, every panel's settings and the notes):
    what a session file keeps, and what "modified" compares, without the dock layout."""
    return {
        # The loaded (or loading) model, never one whose load was refused or failed.
        "model": asdict(window.controller.session_spec(window.model_spec)),
        "prompt": window.prompt_editor.prompt(),
        "top_k": window.prompt_editor.top_k.value(),
        "selection": window.controller.selection.to_dict(),
        "panels": _panel_states(window),
    }


def _panel_states(window) -> dict:
    """Every panel's settings; empty notes are left out, so a session without notes is the
    same file it was before notes existed (lesson sessions, older files)."""
    states = {}
    for b in window.bindings:
        state = b.session_state()
        if state or not getattr(b, "omit_when_empty", False):
            states[b.object_name] = state
    return states


def manifest_of(window) -> dict:
    return dict(content_of(window),
                window_state=bytes(window.saveState(1).toBase64()).decode("ascii"))


def save(window) -> bool:
    if not window.session_path:
        return save_as_dialog(window)
    return save_to(window, window.session_path)


def save_to(window, path: str) -> bool:
    from app.session_results import collect

    try:
        manifest = manifest_of(window)
        results, arrays = collect(window)
        if results is not None:
            manifest["results"] = results
        save_session(path, manifest, arrays)
    except (SessionError, OSError) as exc:
        text = str(exc) if isinstance(exc, SessionError) else (
            f"Cannot save {clip(Path(path).name, 80)}: {write_problem(exc)}.")
        window.errors.show("session", _info(text, "The session was not saved and your work is "
                                                  "still here; the previous file, if any, is "
                                                  "unchanged. Save it somewhere else."))
        return False
    window.session_path = path
    lifecycle = getattr(window, "lifecycle", None)
    if lifecycle is not None:
        lifecycle.saved(path)  # clean title, recent files, the autosave no longer needed
    window.statusBar().showMessage(f"Saved {path}", 4000)
    return True


def save_as_dialog(window) -> bool:
    path, _ = QFileDialog.getSaveFileName(window, "Save session", "", f"Lensbench session "
                                          f"(*{SUFFIX})")
    if not path:
        return False
    if not path.endswith(SUFFIX):
        path += SUFFIX
    return save_to(window, path)


def open_dialog(window) -> None:
    path, _ = QFileDialog.getOpenFileName(window, "Open session", "", f"Lensbench session "
                                          f"(*{SUFFIX});;All files (*)")
    if path:
        window.lifecycle.open_file(path)  # asks first if there is unsaved work


def open_path(window, path: str) -> bool:
    """Open a session all-or-nothing: the whole file (manifest schema, every panel's state, the
    model it names) is checked before anything is applied; a bad file leaves the current session
    untouched and says why. Never raises: it also runs for ``lensbench FILE``."""
    try:
        opened = read_checked(window, path)
    except SessionError as exc:
        window.errors.show("session", _info(str(exc), "The current session is unchanged."))
        return False
    except Exception as exc:  # a bug in a check: report it, never abort the app
        from engine.errors import ErrorInfo

        info = ErrorInfo.from_exception(exc)
        window.errors.show("session", ErrorInfo(
            "SessionError", f"{clip(Path(path).name, 80)} could not be opened.", info.traceback,
            "The current session is unchanged. This looks like a bug; the details can be "
            "copied.", "error"))
        return False
    before, before_path = manifest_of(window), window.session_path
    try:
        _apply(window, opened)
    except Exception as exc:  # last defence: put the previous session back
        from engine.errors import ErrorInfo

        states = {b: before["panels"].get(b.object_name, {}) for b in window.bindings}
        try:
            _apply(window, _Opened(before_path, _spec_of(before), before, states), load=False)
        except Exception:  # noqa: S110 (the first failure is the one to report)
            pass
        window.errors.show("session", ErrorInfo(
            "SessionError", f"{clip(Path(path).name, 80)} could not be applied.",
            ErrorInfo.from_exception(exc).traceback, "The previous session was put back.",
            "error"))
        return False
    return True


@dataclass
class _Opened:
    """A session file read and checked, not yet applied."""

    path: str | None
    spec: ModelSpec
    manifest: dict
    states: dict  # binding -> its checked state
    arrays: dict = field(default_factory=dict)  # the file's arrays (saved results)


def read_checked(window, path: str) -> _Opened:
    """Everything open_path applies, checked; SessionError (for the user) otherwise."""
    manifest, arrays = load_session(path)
    name = clip(Path(path).name, 80)
    try:
        validate_manifest(manifest)
    except SchemaError as exc:
        raise SessionError(f"{name} cannot be opened: {exc}.") from None
    from app.session_results import problem

    bad_results = problem(manifest.get("results"), arrays)
    if bad_results:
        raise SessionError(f"{name} cannot be opened: {bad_results}")
    panels = manifest.get("panels") or {}
    states = {}
    for binding in window.bindings:
        if binding.object_name in panels:
            problem = binding.validate_session_state(panels[binding.object_name])
            if problem:
                raise SessionError(f"{name} cannot be opened: {problem}.")
            states[binding] = panels[binding.object_name]
    spec = _spec_of(manifest)
    controller = window.controller
    if spec not in (controller.loaded_spec, controller.loading_spec):  # else it loads already
        try:
            check_spec(spec)
        except ModelLoadError as exc:
            raise SessionError(f"{name} names a model that cannot be loaded: {exc.message} "
                               f"{exc.hint}".strip()) from None
    return _Opened(path, spec, manifest, states, arrays)


def _spec_of(manifest: dict) -> ModelSpec:
    model = manifest.get("model") or {}
    return ModelSpec(**{k: v for k, v in model.items() if k in ModelSpec.__dataclass_fields__})


def _apply(window, opened: _Opened, load: bool = True) -> None:
    manifest = opened.manifest
    prompt = manifest.get("prompt", "")
    window.session_path = opened.path
    if isinstance(manifest.get("selection"), dict):
        # First: the selection's prompt is shown in the editor, and the editor's own prompt
        # (what the user typed last) wins where the two differ.
        window.controller.selection.load_dict(manifest["selection"])
    window.prompt_editor.set_prompt(prompt)
    window.prompt_editor.top_k.setValue(manifest.get("top_k", 10))
    for binding, state in opened.states.items():
        binding.restore_session_state(state)
    if not load:
        return
    controller = window.controller
    if opened.spec != controller.session_spec(window.model_spec) or (
            controller.model_info is None and controller.loading_spec is None):
        window.load_model(opened.spec)
    from app.session_results import restore

    # Shown once that model is loaded, if it matches: now, if it is loaded already, but only
    # after the prompt's run (which the panels getting results back skip).
    show_now = restore(window, manifest, opened.arrays)
    if prompt.strip():  # after the load, if one was started (never queued behind it)
        window._run_prompt(prompt, window.prompt_editor.top_k.value(), False)
    if show_now is not None:
        show_now()


def _info(message: str, hint: str):
    from engine.errors import ErrorInfo

    return ErrorInfo("SessionError", message, "", hint, "input")
