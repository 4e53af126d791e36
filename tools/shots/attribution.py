"""Render the Layer attribution panel on the bundled model and save the README screenshots.

    QT_QPA_PLATFORM=offscreen python -m tools.shots.attribution [--model FOLDER] [--out DIR]

Runs "The Eiffel Tower is in" with target " Paris" and saves docs/images/attribution.png (logit
lens tab) plus attribution_components.png and attribution_heads.png; then an IOI batch
(" Mary" − " John" style pairs) as attribution_ioi_batch.png.
"""

from __future__ import annotations

from pathlib import Path

from tools.shots.common import open_window, shot_parser, show_dock, wait

PROMPT = "The Eiffel Tower is in"
ANSWER = " Paris"



def main(argv: list[str] | None = None) -> int:
    parser = shot_parser(__doc__)
    args = parser.parse_args(argv)
    app, win = open_window(args.model, 1366, 768)
    if win is None:
        return 1
    binding, dock = show_dock(win, "attributionDock", 620)
    panel = binding.widget
    panel.set_target(ANSWER, "", -1)
    win.prompt_editor.edit.setPlainText(PROMPT)
    win.prompt_editor.run_button.click()
    wait(app, lambda: panel.result is not None and not win.controller.busy)
    if panel.message.isVisible():
        print("panel says:", panel.message.text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    r = panel.result
    print("lens", dict(zip(r.lens_labels, r.lens_values[0].round(2).tolist(), strict=True)))
    print("ranks", r.lens_ranks[0].tolist())
    print(
        "components",
        dict(zip(r.component_labels, r.component_values[0].round(2).tolist(), strict=True)),
    )
    for tab, name in (
        (0, "attribution.png"),
        (1, "attribution_components.png"),
        (2, "attribution_heads.png"),
    ):
        panel.tabs.setCurrentIndex(tab)
        app.processEvents()
        panel.grab().save(str(out / name))
        print("saved", out / name)
    win.grab().save(str(out / "attribution_window.png"))
    # a batch of IOI prompts: mean with per-prompt spread
    panel.batch_check.setChecked(True)
    panel.ioi_button.click()
    panel.set_target("", "", -1)
    panel.run_button.click()
    wait(
        app,
        lambda: (
            (panel.result is not None and panel.result.n_prompts > 1 and not win.controller.busy)
            or panel.message.isVisible()
        ),
    )
    if panel.message.isVisible():
        print("IOI batch:", panel.message.text())
    else:
        panel.tabs.setCurrentIndex(1)
        app.processEvents()
        panel.grab().save(str(out / "attribution_ioi_batch.png"))
        print("saved", out / "attribution_ioi_batch.png")
    win.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
