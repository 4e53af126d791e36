"""Render the Features panel on the bundled model and save the README screenshots.

    QT_QPA_PLATFORM=offscreen python -m tools.shots.features [--out DIR] [--train]

The bundled SAE loads by itself with its shipped dashboards. Saves docs/images/features.png (the
repeated-name feature's dashboard, the prompt's token strip and the features at the selected
token), features_after_in.png, features_attribution.png (each feature's direct effect on
" Mary" − " John" in an IOI sentence), features_intervene.png (the feature helping " Mary" most,
ablated) and, with --train, features_train.png (a short training run's curves and evaluation).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tools.shots.common import open_window, shot_parser, show_dock, wait

PROMPT = "Once upon a time, there was a gentle cat. The cat met Nina. Nina found a red ball in Paris."
IOI = "When John and Mary went to the store, John gave a drink to"


def settle(app, seconds: float = 0.3) -> None:
    """Let queued layout and paint events run before a grab."""
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    parser = shot_parser(__doc__)
    parser.add_argument("--train", action="store_true")
    args = parser.parse_args(argv)
    from engine.sae_io import BUNDLED_SAE_DIR

    app, win = open_window(args.model, 1366, 768)
    if win is None:
        return 1
    binding, dock = show_dock(win, "featuresDock", 470)
    panel = binding.widget
    wait(app, lambda: panel.stats is not None and not win.controller.busy)
    features = json.loads((BUNDLED_SAE_DIR / "features.json").read_text())
    after_in = features["features"]["after_in"]["feature"]
    name = features["features"]["repeated_name"]["feature"]
    win.prompt_editor.edit.setPlainText(PROMPT)
    win.prompt_editor.run_button.click()
    wait(app, lambda: panel.prompt_features is not None and not win.controller.busy)
    tokens = list(panel.prompt_features.str_tokens)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    panel.select_feature(name)
    win.controller.selection.set_position(len(tokens) - 1 - tokens[::-1].index(" Nina"))
    app.processEvents()
    settle(app)
    win.grab().save(str(out / "features_window.png"))
    settle(app)
    panel.grab().save(str(out / "features.png"))
    print("saved", out / "features.png", "after in", after_in, "name", name)
    panel.select_feature(after_in)
    win.controller.selection.set_position(tokens.index(" Paris"))
    app.processEvents()
    settle(app)
    panel.grab().save(str(out / "features_after_in.png"))
    win.prompt_editor.edit.setPlainText(IOI)
    win.prompt_editor.run_button.click()
    wait(app, lambda: not win.controller.busy)
    # attribution
    view = panel.attribution
    panel.tabs.setCurrentWidget(view)
    view.answer_edit.setText(" Mary")
    view.cf_edit.setText(" John")
    view.run_button.click()
    wait(app, lambda: view.result is not None and not win.controller.busy)
    settle(app)
    panel.grab().save(str(out / "features_attribution.png"))
    print("attribution:", view.summary.text())
    # interventions: ablate the feature that helps " Mary" over " John" most, at every position
    top = int(view.result.features[0])
    iv = panel.intervene
    panel.tabs.setCurrentWidget(iv)
    iv.set_edits([{"feature": top, "mode": "ablate", "value": 0.0, "positions": []}])
    iv.answer_edit.setText(" Mary")
    iv.cf_edit.setText(" John")
    iv.run_button.click()
    wait(app, lambda: iv.result is not None and not win.controller.busy)
    settle(app)
    panel.grab().save(str(out / "features_intervene.png"))
    print("intervention:", iv.summary.text())
    if args.train:
        tv = panel.train
        panel.tabs.setCurrentWidget(tv)
        tv.layer.setValue(1)
        tv.hook.setCurrentIndex(tv.hook.findData("mlp.hook_post"))
        tv.tokens.setValue(300_000)
        tv.output.setText(str(Path(tempfile.mkdtemp()) / "shot-sae"))
        tv.train_button.click()
        wait(app, lambda: tv.load_button.isEnabled() or tv.train_button.isEnabled(), 3600)
        settle(app)
        panel.grab().save(str(out / "features_train.png"))
        print("train:", tv.status.text())
    win.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
