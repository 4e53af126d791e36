"""Write the session fixture of the current schema version: a file every later version must open.

    QT_QPA_PLATFORM=offscreen python -m tools.make_session_fixture

It is what the app saves after a short study on the bundled model: the predictions of a prompt,
its attribution, a head sweep, a plan, an induction scan, notes, and (from version 3) two pinned
heads with the attention layer view. Run it once when
``app.session_io.SCHEMA_VERSION`` goes up (never to rewrite an older version's fixture): the file
goes to ``tests/fixtures/sessions/v<N>.lensbench`` and ``tests/app/test_session_versions.py``
opens every such file.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "sessions"
PROMPT = "When John and Mary went to the store, John gave a drink to"
PINNED = ((1, 1), (0, 3))
NOTES = "# IOI on the organism\nL1H1 carries the name; see the plan's bars.\n"


def _wait_idle(app, window, timeout_s: float = 600) -> None:
    from PySide6.QtCore import QEventLoop

    end = time.monotonic() + timeout_s
    while window.controller.busy or window.controller.loading:
        if time.monotonic() > end:
            raise TimeoutError("the window did not finish its jobs")
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)


def main() -> int:
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from app.session_actions import save_to
    from app.session_io import SCHEMA_VERSION
    from engine.model_sources import ModelSpec

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow(restore_layout=False, persist=False)
    window.resize(1400, 900)
    window.show()
    window.load_model(ModelSpec("bundled", device="cpu"))
    _wait_idle(app, window)
    bindings = {b.object_name: b for b in window.bindings}
    induction = bindings["inductionDock"]
    induction.widget.seq_len.setValue(12)
    induction.widget.batch.setValue(4)
    window.prompt_editor.set_prompt(PROMPT)
    window._run_prompt(PROMPT, 10, False)
    _wait_idle(app, window)
    induction.scan(induction.widget.settings())
    attribution = bindings["attributionDock"].widget
    attribution.answer_edit.setText(" Mary")
    attribution.cf_edit.setText(" John")
    bindings["attributionDock"].on_prompt_run(PROMPT, False)
    patching = bindings["patchingDock"]
    _wait_idle(app, window)
    patching.run_sweep("head_out")
    _wait_idle(app, window)
    patching.widget.plan.add_items([{"component": "z", "layer": 1, "index": 1, "positions": []},
                                    {"component": "mlp_out", "layer": 0, "index": -1,
                                     "positions": [], "mode": "zero"}])
    patching.run_plan(patching.widget.plan.items)
    _wait_idle(app, window)
    # Version 3: two pinned heads (their patterns are saved) and a layer view.
    attention = bindings["attentionDock"].widget
    for layer, head in PINNED:
        attention.set_head(layer, head)
        attention.pins.pin_button.click()
    attention.set_layer_view(1)
    window.notes.restore_session_state({"text": NOTES})
    FIXTURES.mkdir(parents=True, exist_ok=True)
    out = FIXTURES / f"v{SCHEMA_VERSION}.lensbench"
    if out.exists():
        print(f"{out} exists: a fixture is never rewritten", file=sys.stderr)
        return 1
    if not save_to(window, str(out)):
        return 1
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
