"""Render the Features panel on the bundled model and save the README screenshots.

    QT_QPA_PLATFORM=offscreen python -m tools.shots.features [--out DIR] [--train]

The bundled SAE loads by itself with its shipped dashboards. Saves docs/images/features.png (the
city feature's dashboard with the prompt's token strip), features_attribution.png (each feature's
direct effect on " Mary" − " John" in an IOI sentence), features_intervene.png (the city feature
ablated on "The Eiffel Tower is in") and, with --train, features_train.png (a short training run's
curves and evaluation).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tools.shots.common import open_window, shot_parser, show_dock, wait

PROMPT = "The Colosseum is in Rome. When John and Mary went to the store, John gave a drink to"


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
    city = features["city_after_is_in"]["feature"]
    name = features["repeated_name"]["feature"]
    win.prompt_editor.edit.setPlainText(PROMPT)
    win.prompt_editor.run_button.click()
    wait(app, lambda: panel.prompt_features is not None and not win.controller.busy)
    tokens = list(panel.prompt_features.str_tokens)
    panel.select_feature(city)
    win.controller.selection.set_position(tokens.index(" Rome"))
    app.processEvents()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    win.grab().save(str(out / "features_window.png"))
    panel.grab().save(str(out / "features.png"))
    print("saved", out / "features.png", "city", city, "name", name)
    panel.select_feature(name)
    win.controller.selection.set_position(len(tokens) - 4)  # the second " John"
    app.processEvents()
    panel.grab().save(str(out / "features_repeated_name.png"))
    # attribution
    view = panel.attribution
    panel.tabs.setCurrentWidget(view)
    view.answer_edit.setText(" Mary")
    view.cf_edit.setText(" John")
    view.run_button.click()
    wait(app, lambda: view.result is not None and not win.controller.busy)
    panel.grab().save(str(out / "features_attribution.png"))
    print("attribution:", view.summary.text())
    # interventions: remove the city feature where "Rome" is predicted
    win.prompt_editor.edit.setPlainText("The Colosseum is in")
    win.prompt_editor.run_button.click()
    wait(app, lambda: not win.controller.busy)
    iv = panel.intervene
    panel.tabs.setCurrentWidget(iv)
    iv.set_edits([{"feature": city, "mode": "steer", "value": -8.0, "positions": []}])
    iv.answer_edit.setText(" Rome")
    iv.run_button.click()
    wait(app, lambda: iv.result is not None and not win.controller.busy)
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
        panel.grab().save(str(out / "features_train.png"))
        print("train:", tv.status.text())
    win.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
