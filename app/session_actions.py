"""File > Open/Save session: gathers state from the window and its panels, and restores it."""

from __future__ import annotations

from dataclasses import asdict

from PySide6.QtWidgets import QFileDialog

from app.session_io import SUFFIX, SessionError, load_session, save_session
from engine.model_sources import ModelSpec


def content_of(window) -> dict:
    """The session's work (model, prompt, selection, every panel's settings and the notes):
    what a session file keeps, and what "modified" compares, without the dock layout."""
    return {
        "model": asdict(window.model_spec),
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
    try:
        save_session(path, manifest_of(window))
    except (SessionError, OSError) as exc:
        window.errors.show("session", _info(str(exc), "The session was not saved; the previous "
                                                       "file, if any, is unchanged."))
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
    """Load a session; a bad file leaves the current session untouched and says why."""
    try:
        manifest, _arrays = load_session(path)
        model = manifest.get("model") or {}
        spec = ModelSpec(**{k: v for k, v in model.items() if k in ModelSpec.__dataclass_fields__
                            and isinstance(v, (str, int))})
        prompt = str(manifest.get("prompt", ""))
        top_k = int(manifest.get("top_k", 10))
    except (SessionError, TypeError, ValueError) as exc:
        window.errors.show("session", _info(str(exc), "The current session is unchanged."))
        return False
    window.session_path = path
    window.prompt_editor.set_prompt(prompt)
    window.prompt_editor.top_k.setValue(max(1, min(50, top_k)))
    selection = manifest.get("selection")
    if isinstance(selection, dict):
        try:
            window.controller.selection.load_dict(selection)
        except (TypeError, ValueError):
            pass
    panels = manifest.get("panels")
    if isinstance(panels, dict):
        for b in window.bindings:
            state = panels.get(b.object_name)
            if isinstance(state, dict):
                b.restore_session_state(state)
    if spec != window.model_spec or window.controller.model_info is None:
        window.load_model(spec)
    if prompt.strip():  # after the load, if one was started (never queued behind it)
        window._run_prompt(prompt, window.prompt_editor.top_k.value(), False)
    return True


def _info(message: str, hint: str):
    from engine.errors import ErrorInfo

    return ErrorInfo("SessionError", message, "", hint, "input")
