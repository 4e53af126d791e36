"""Write the session files of the lessons and of the example sessions.

    QT_QPA_PLATFORM=offscreen python -m tools.make_lesson_sessions

Each session is what the app itself saves (``app.session_actions.manifest_of`` through
``app.session_io.save_session``) after the lesson's ``setup`` (lesson.json) is applied to a fresh
window: model, prompt, selection and the panels' settings. Rerun after changing a setup or the
session format; tests/app/test_lessons.py fails when a shipped file differs from what this makes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from app.lesson_catalog import EXAMPLES_DIR, load_lessons

IOI_GPT2 = "When Mary and John went to the store, John gave a drink to"
EXAMPLES = {
    # GPT-2 small on the classic IOI sentence (Wang et al. 2022): loads gpt2-small from the
    # Hugging Face cache, or says how to get it when it is not there.
    "gpt2-small-ioi": {
        "model": {"source": "hf", "name": "gpt2-small"},
        "prompt": IOI_GPT2,
        "selection": {"layer": 9, "head": 9, "position": -1},
        "panels": {
            "patchingDock": {"pairs": [[IOI_GPT2, "When Mary and John went to the store, Mary "
                                        "gave a drink to", " Mary", " John"]],
                             "metric": "logit_diff_norm", "direction": "denoise"},
            "attributionDock": {"answer": " Mary", "counterfactual": " John", "position": -1,
                                "tab": 2},
        },
    },
}


def manifest_for(window, setup: dict) -> dict:
    """Apply ``setup`` to ``window`` and return the manifest the app would save."""
    from app.session_actions import manifest_of
    from engine.model_sources import ModelSpec

    model = setup.get("model", {})
    window.model_spec = ModelSpec(model.get("source", "bundled"),
                                  model.get("name", ModelSpec().name))
    prompt = setup.get("prompt", "")
    window.prompt_editor.set_prompt(prompt)
    window.controller.selection.load_dict(dict(setup.get("selection", {}), prompt=prompt))
    for binding in window.bindings:
        state = setup.get("panels", {}).get(binding.object_name)
        if state:
            binding.restore_session_state(dict(state))
    manifest = manifest_of(window)
    manifest.pop("window_state", None)  # a lesson does not rearrange the student's docks
    return manifest


def fresh_window():
    from app.main_window import MainWindow

    return MainWindow(restore_layout=False, persist=False)


def targets() -> list[tuple[Path, dict]]:
    out = [(lesson.session_path, lesson.setup) for lesson in load_lessons()]
    out += [(EXAMPLES_DIR / f"{name}.lensbench", setup) for name, setup in EXAMPLES.items()]
    return out


def main() -> int:
    from PySide6.QtWidgets import QApplication

    from app.session_io import save_session

    app = QApplication.instance() or QApplication(sys.argv[:1])  # noqa: F841
    EXAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    for path, setup in targets():
        window = fresh_window()
        save_session(path, manifest_for(window, setup))
        window.close()
        window.controller.shutdown()
        window.deleteLater()
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
